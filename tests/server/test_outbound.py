"""Outbound: when queued frames reach the socket, through a recording transport."""

from __future__ import annotations

import asyncio

from mq9cluster.server.outbound import WRITE_AT, Outbound


class RecordingTransport:
    """The part of a write transport Outbound uses; keeps every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.closing:
            raise RuntimeError("write to a closed transport")
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def outbound(loop: asyncio.AbstractEventLoop, transport: RecordingTransport,
             slow: list[str] | None = None) -> Outbound:
    return Outbound(transport, loop, 1 << 20, 1.0, (slow if slow is not None else []).append)  # type: ignore[arg-type]


def test_small_frames_go_out_in_one_write_at_the_end_of_the_iteration() -> None:
    async def run() -> None:
        transport = RecordingTransport()
        out = outbound(asyncio.get_running_loop(), transport)
        for i in range(10):
            out.write(b"frame %d\r\n" % i)
        assert transport.writes == []
        await asyncio.sleep(0)
        assert transport.writes == [b"".join(b"frame %d\r\n" % i for i in range(10))]

    asyncio.run(run())


def test_a_large_burst_goes_out_in_growing_pieces_while_it_is_built() -> None:
    """The first acks of a large group-commit entry reach the client before the last are built;
    each early write doubles the threshold, so a long burst costs a few writes."""

    async def run() -> None:
        transport = RecordingTransport()
        out = outbound(asyncio.get_running_loop(), transport)
        frame = b"x" * 64
        count = 64 * WRITE_AT // len(frame)
        for i in range(count):
            out.write(frame)
            if i == WRITE_AT // len(frame):
                assert len(transport.writes) == 1  # written at once, not at the end of the iteration
        await asyncio.sleep(0)
        sizes = [len(w) for w in transport.writes]
        assert sizes[:5] == [WRITE_AT, 2 * WRITE_AT, 4 * WRITE_AT, 8 * WRITE_AT, 16 * WRITE_AT]
        assert len(sizes) == 7 and sum(sizes) == count * len(frame)
        assert b"".join(transport.writes) == frame * count
        for _ in range(WRITE_AT // len(frame) + 1):  # the next iteration starts at WRITE_AT again
            out.write(frame)
        assert len(transport.writes) == 8

    asyncio.run(run())


def test_nothing_is_written_while_held_or_after_close() -> None:
    async def run() -> None:
        transport = RecordingTransport()
        out = outbound(asyncio.get_running_loop(), transport)
        out.hold()
        for _ in range(3):
            out.write(b"y" * WRITE_AT)
        await asyncio.sleep(0)
        assert transport.writes == []
        out.switch_transport(transport)  # type: ignore[arg-type]
        assert transport.writes == [b"y" * 3 * WRITE_AT]
        out.close()
        out.write(b"z" * 2 * WRITE_AT)
        out.write(b"z" * 2 * WRITE_AT)
        await asyncio.sleep(0)
        assert transport.writes == [b"y" * 3 * WRITE_AT]

    asyncio.run(run())


def test_no_early_write_to_a_closing_transport() -> None:
    """An early write runs inside another client's publish: a transport closed under it (the
    peer went away, connection_lost not yet delivered) must not raise into that publish."""

    async def run() -> None:
        transport = RecordingTransport()
        out = outbound(asyncio.get_running_loop(), transport)
        transport.closing = True
        for _ in range(4):
            out.write(b"w" * WRITE_AT)  # would raise if written now
        assert transport.writes == []
        out.close()
        await asyncio.sleep(0)

    asyncio.run(run())
