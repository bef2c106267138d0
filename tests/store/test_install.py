"""Snapshots of a store and their install into another: generations, the pointer, readers, crashes."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mq9cluster.store import Mailbox, Store, StoreError, generations, keys

MailboxFactory = Callable[..., Mailbox]


def _fill(store: Store, mailbox: MailboxFactory, address: str, count: int, size: int = 16) -> None:
    batch = store.batch(store.last_applied() + 1)
    if not batch.has_mailbox(address):
        batch.put_mailbox(mailbox(address, public=True))
    for n in range(count):
        batch.append_message(address, n % 4, n, os.urandom(size))
    batch.commit()


def _packed(store: Store) -> tuple[bytes, int]:
    with store.snapshot() as snapshot:
        out = io.BytesIO()
        snapshot.write_to(out)
        return out.getvalue(), snapshot.index


def _state(store: Store) -> tuple[int, dict[str, int], list[tuple[int, int]]]:
    messages = [(m.priority, m.msg_id) for m in store.iter_messages("a")]
    return store.last_applied(), store.key_counts(), messages


def test_install_replaces_the_state_and_later_commits_continue_from_it(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "node" / "store") as node:
        _fill(leader, mailbox, "a", 10)
        _fill(leader, mailbox, "a", 10)
        packed, index = _packed(leader)
        _fill(node, mailbox, "old", 3)  # a stale state, to be replaced entirely
        assert node.install(io.BytesIO(packed)) == index == 2
        assert _state(node) == _state(leader)
        assert node.get_mailbox("old") is None
        _fill(node, mailbox, "a", 1)  # the journal's next entry: msg_ids continue
        assert [m.msg_id for m in node.iter_messages("a", priorities=[0])][-1] == 21
        assert node.directory == tmp_path / "node" / "store.1"
    names = sorted(p.name for p in (tmp_path / "node").iterdir())
    assert names == ["store.1", "store.CURRENT"]  # the old generation is gone
    with Store.open(tmp_path / "node" / "store") as reopened:  # the pointer survives a restart
        assert reopened.last_applied() == 3 and reopened.directory.name == "store.1"


def test_a_second_install_moves_to_the_next_generation(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "store") as node:
        for expected in ("store.1", "store.2"):
            _fill(leader, mailbox, "a", 5)
            node.install(io.BytesIO(_packed(leader)[0]))
            assert node.directory.name == expected
            assert _state(node) == _state(leader)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leader", "store.2", "store.CURRENT"]


def test_a_snapshot_holds_exactly_its_index_while_commits_go_on(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "store") as node:
        _fill(leader, mailbox, "a", 5)
        with leader.snapshot() as snapshot:
            _fill(leader, mailbox, "a", 5)  # after the checkpoint, before it is packed
            out = io.BytesIO()
            snapshot.write_to(out)
        assert not any(".checkpoint-" in p.name for p in tmp_path.iterdir())  # discarded
        assert node.install(io.BytesIO(out.getvalue())) == 1
        assert len(list(node.iter_messages("a"))) == 5


def test_reads_in_progress_finish_on_the_old_state_and_then_release_it(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "store") as node:
        _fill(node, mailbox, "a", 600)
        _fill(leader, mailbox, "a", 3)
        packed = _packed(leader)[0]
        scan = iter(node.iter_messages("a"))
        first = next(scan)
        with node._reading() as db:  # a read that is inside the old handle during the install
            node.install(io.BytesIO(packed))
            assert db.get(keys.LAST_APPLIED_KEY) is not None  # not closed under the reader
            assert (tmp_path / "store").is_dir()
        assert not (tmp_path / "store").exists()  # the last reader left: closed and deleted
        assert len([first, *scan]) == 600  # a scan keeps its fixed view to the end
        assert len(list(node.iter_messages("a"))) == 3


def test_concurrent_readers_never_see_a_closed_store(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "store") as node:
        _fill(node, mailbox, "a", 50)
        errors: list[BaseException] = []
        stop = threading.Event()

        def read_forever() -> None:
            try:
                while not stop.is_set():
                    node.get_mailbox("a")
                    node.public_mailboxes()
                    node.list_message_summaries("a")
                    node.due_expiries(1 << 40)
                    sum(1 for _ in node.iter_messages("a"))
                    time.sleep(0.0005)  # let the installing thread have the GIL now and then
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=read_forever) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            for _ in range(8):
                _fill(leader, mailbox, "a", 20)
                node.install(io.BytesIO(_packed(leader)[0]))
        finally:
            stop.set()
            for reader in readers:
                reader.join()
        assert errors == []
        assert _state(node) == _state(leader)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leader", "store.8", "store.CURRENT"]


def _tar(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _empty_checkpoint(tmp_path: Path) -> bytes:
    from rocksdict import Rdict  # a RocksDB that is not an mq9cluster store

    Rdict(str(tmp_path / "foreign")).close()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(tmp_path / "foreign", arcname="checkpoint")
    return out.getvalue()


@pytest.mark.parametrize("make", [
    lambda tmp: b"not a tar at all" * 100,
    lambda tmp: _tar({"checkpoint/../escape": b"x"}),
    lambda tmp: _tar({"elsewhere/CURRENT": b"x"}),
    lambda tmp: _tar({}),
    _empty_checkpoint,
], ids=["garbage", "path-escape", "foreign-dir", "empty", "not-mq9"])
def test_a_bad_snapshot_is_refused_and_leaves_the_store_as_it_was(
        tmp_path: Path, mailbox: MailboxFactory, make: Callable[[Path], bytes]) -> None:
    with Store.open(tmp_path / "store") as node:
        _fill(node, mailbox, "a", 5)
        before = _state(node)
        with pytest.raises(StoreError):
            node.install(io.BytesIO(make(tmp_path)))
        assert _state(node) == before
        _fill(node, mailbox, "a", 1)  # still writable
    assert not (tmp_path / "store.1").exists() and not (tmp_path / "store.CURRENT").exists()


def test_a_batch_begun_before_an_install_cannot_commit_after_it(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "store") as node:
        _fill(leader, mailbox, "a", 1)
        batch = node.batch(5)
        node.install(io.BytesIO(_packed(leader)[0]))
        with pytest.raises(StoreError):
            batch.commit()


def test_open_removes_what_an_interrupted_install_or_snapshot_left(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "store") as node:
        _fill(node, mailbox, "a", 3)
        node.snapshot()  # never discarded: a crash while it was being packed
    (tmp_path / "store.1").mkdir()  # an install that crashed before the pointer moved
    (tmp_path / "store.1" / "000001.sst").write_bytes(b"half")
    (tmp_path / "store.CURRENT.tmp").write_text("store.1\n")
    (tmp_path / "unrelated").mkdir()
    with Store.open(tmp_path / "store") as node:
        assert node.last_applied() == 1 and node.directory == tmp_path / "store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "unrelated"]


def test_a_pointer_naming_something_else_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path / "store").close()
    (tmp_path / "store.CURRENT").write_text("../elsewhere\n")
    with pytest.raises(StoreError):
        Store.open(tmp_path / "store")


_CHILD = textwrap.dedent("""
    import sys
    from mq9cluster.store import Store
    store = Store.open(sys.argv[1])
    with open(sys.argv[2], "rb") as source:
        print("installing", flush=True)
        store.install(source)
    print("installed", flush=True)
""")


def _unpacking(generation: Path) -> bool:
    """The install has written at least one file of the new generation."""
    try:
        return any(generation.iterdir())
    except FileNotFoundError:
        return False


def test_a_crash_at_any_point_of_an_install_leaves_the_old_or_the_new_state(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    """SIGKILL a process at several moments of an install; every restart finds one whole state."""
    with Store.open(tmp_path / "leader") as leader:
        for _ in range(4):
            _fill(leader, mailbox, "a", 10_000, size=512)  # about 20 MB: an install takes a while
        (tmp_path / "snapshot.tar").write_bytes(_packed(leader)[0])
        new = _state(leader)
    path = tmp_path / "node" / "store"
    with Store.open(path) as node:
        _fill(node, mailbox, "b", 10)
        old = _state(node)
    rng = random.Random(7)
    kill_when: list[Callable[[], bool]] = [
        lambda: True,  # as it begins
        lambda: _unpacking(path.with_name("store.1")),  # in the middle of unpacking
        *[lambda: threading.Event().wait(rng.uniform(0, 0.15)) or True for _ in range(4)],  # anywhere
    ]
    outcomes, interrupted = [], 0
    for when in [*kill_when, None]:  # None: let the last attempt finish
        interrupted += bool(generations.garbage(path))  # a kill left a half install behind
        with Store.open(path) as node:  # what a restart finds: one whole state
            found = _state(node)
        assert found in (old, new)
        outcomes.append("old" if found == old else "new")
        if found == new:
            break
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(tmp_path / "snapshot.tar")],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline() == "installing\n"
        if when is None:
            assert child.wait(60) == 0
        else:
            while not when() and child.poll() is None:
                time.sleep(0.0005)
            child.kill()
            child.wait()
        child.stdout.close()
    with Store.open(path) as node:
        assert _state(node) == new
    assert outcomes[0] == "old" and interrupted  # at least the kill in the middle of unpacking
    assert generations.garbage(path) == []  # the last open collected what the kills left


def test_restore_into_a_store_that_was_installed_into(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "leader") as leader, Store.open(tmp_path / "store") as node:
        _fill(leader, mailbox, "a", 2)
        node.install(io.BytesIO(_packed(leader)[0]))
        node.checkpoint(tmp_path / "backup")
    with Store.restore(tmp_path / "backup", tmp_path / "store") as restored:
        assert restored.directory.name == "store.2" and restored.last_applied() == 1
