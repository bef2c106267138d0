"""Mailbox op encoding: the log format is a msgpack array [opcode, *fields]; ops round-trip."""

from __future__ import annotations

import msgpack
import pytest

from mq9cluster.mailbox import ops

SAMPLES = [
    ops.AppendOp("inbox", 2, 1_700_000_000_000, b"\x00payload\xff", b"NATS/1.0\r\nK: v\r\n\r\n", 10, 20),
    ops.AppendOp("inbox", 0, 1, b"", None),
    ops.CreateOp("pub.name", 5, 3600, True, "desc \u00e9", 7),
    ops.DeleteMessageOp("inbox", 42),
]


@pytest.mark.parametrize("op", SAMPLES, ids=lambda op: type(op).__name__)
def test_encode_writes_the_msgpack_array_the_log_holds_and_decodes_back(op: ops.Op) -> None:
    raw = ops.encode(op)
    assert raw == msgpack.packb([ops._CODES[type(op)], *op], use_bin_type=True)
    assert ops.decode(raw) == op


def test_encodes_interleaved_with_decodes_do_not_share_state() -> None:
    raws = [ops.encode(op) for op in SAMPLES * 3]
    assert [ops.decode(raw) for raw in raws] == SAMPLES * 3
