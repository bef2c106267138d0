"""Subject and queue-name syntax, as nats-server 2.9.10 answers SUB and pedantic PUB."""

from __future__ import annotations

import pytest

from mq9cluster.protocol.subject import (
    has_wildcard,
    valid_publish_subject,
    valid_queue_name,
    valid_subscribe_subject,
)

# subject, valid to subscribe, valid to publish (pedantic), has a wildcard token
SUBJECTS: list[tuple[bytes, bool, bool, bool]] = [
    (b"foo", True, True, False),
    (b"foo.bar", True, True, False),
    (b"foo.*.bar", True, False, True),
    (b"foo.>", True, False, True),
    (b">", True, False, True),
    (b"*", True, False, True),
    (b"*.*", True, False, True),
    (b"foo*", True, True, False),
    (b"foo>", True, True, False),
    (b"foo.>>", True, True, False),
    (b"foo.**", True, True, False),
    (b"*foo.bar>", True, True, False),
    (b"$SYS.x", True, True, False),
    (b"_INBOX.abc.*", True, False, True),
    (b"f\xc3\xa9.\x00", True, True, False),
    (b"", False, False, False),
    (b".", False, False, False),
    (b"foo.", False, False, False),
    (b".foo", False, False, False),
    (b"foo..bar", False, False, False),
    (b"foo.>.bar", False, False, True),
    (b">.foo", False, False, True),
    (b"foo.*.", False, False, True),
    (b"foo bar", False, False, False),
    (b"foo\tbar", False, False, False),
    (b"foo\rbar", False, False, False),
    (b"foo\nbar", False, False, False),
    (b"foo\x0cbar", False, False, False),
    (b"foo.\x0b", False, False, False),
]
IDS = [repr(row[0]) for row in SUBJECTS]


@pytest.mark.parametrize(("subject", "sub_ok", "pub_ok", "wildcard"), SUBJECTS, ids=IDS)
def test_subject_table(subject: bytes, sub_ok: bool, pub_ok: bool, wildcard: bool) -> None:
    assert valid_subscribe_subject(subject) is sub_ok
    assert valid_publish_subject(subject) is pub_ok
    assert has_wildcard(subject) is wildcard


@pytest.mark.parametrize(("queue", "ok"), [
    (b"q", True), (b"workers.v1", True), (b"q*", True), (b"q.>", True), (b".q", True),
    (b"a..b", True), (b"\xc3\xa9", True),
    (b"", False), (b"q w", False), (b"q\t", False), (b"\rq", False), (b"q\n", False),
])
def test_queue_names(queue: bytes, ok: bool) -> None:
    assert valid_queue_name(queue) is ok
