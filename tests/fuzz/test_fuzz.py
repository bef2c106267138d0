"""The fuzz targets for a short, bounded budget (the long run is `make fuzz`)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import SEEDS, TARGETS

BUDGET = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

frames = st.lists(st.sampled_from([
    b"PUB ", b"HPUB ", b"SUB ", b"UNSUB ", b"MSG ", b"CONNECT ", b"INFO ", b"PING", b"RS+ ", b"RMSG ",
    b"foo ", b"| ", b"3", b"12 ", b"99999999999", b"\r\n", b"\n", b"\r", b" ", b"\t", b"{}", b"NATS/1.0\r\n",
]) | st.binary(max_size=8), max_size=40).map(b"".join)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds(name):
    for seed in SEEDS[name]:
        TARGETS[name](seed)


@BUDGET
@given(st.integers(0, 255), frames)
def test_parser_on_frame_soup(mode, body):
    TARGETS["parser"](bytes([mode]) + body)


@BUDGET
@given(st.binary(max_size=512))
def test_parser_on_bytes(data):
    TARGETS["parser"](data)


tokens = st.sampled_from(["MAILBOX", "CREATE", "MSG", "LIST", "DELETE", "PUBLIC", "urgent", "critical",
                          "normal", "low", "abc", "a" * 40, "*", ">", "", "17", "-1", "é"])
bodies = st.one_of(st.binary(max_size=64), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["ttl", "public", "name", "desc", "x"]), inner, max_size=4),
    max_leaves=8,
).map(lambda value: __import__("json").dumps(value).encode()))


@BUDGET
@given(st.lists(tokens, max_size=6).map(".".join), bodies)
def test_mq9_requests(subject, body):
    TARGETS["mq9"](subject.encode() + b"\0" + body)
