"""Malformed inputs with the Violation nats-server 2.9.10 reacts with (checked on the wire).

``send_err`` True: nats-server sends ``-ERR '<text>'`` and closes; False: it closes silently.
"""

from __future__ import annotations

from mq9cluster.protocol import parser

UNKNOWN = (parser.UNKNOWN_OPERATION, True)
CONTROL_LINE = (parser.MAX_CONTROL_LINE, True)
PAYLOAD = (parser.MAX_PAYLOAD, True)
PARSE = (parser.PARSE_ERROR, False)
SIZE = (parser.BAD_SIZE, False)
HEADER_SIZE = (parser.BAD_HEADER_SIZE, False)
HEADER_TOO_BIG = (parser.HEADER_TOO_BIG, False)
JSON = (parser.BAD_JSON, False)

ERROR_CASES: list[tuple[bytes, tuple[str, bool]]] = [
    # unknown operations, including ops without their separator and client-bound ops
    (b"FOO\r\n", UNKNOWN),
    (b"\r\n", UNKNOWN),
    (b"\n", UNKNOWN),
    (b" PING\r\n", UNKNOWN),
    (b"\tPING\r\n", UNKNOWN),
    (b"P\r\n", UNKNOWN),
    (b"PI\r\n", UNKNOWN),
    (b"+O\r\n", UNKNOWN),
    (b"PUB\r\n", UNKNOWN),
    (b"PUB\n", UNKNOWN),
    (b"HPUB\r\n", UNKNOWN),
    (b"PUBfoo 0\r\n\r\n", UNKNOWN),
    (b"PUBX foo 1\r\n", UNKNOWN),
    (b"SUB\r\n", UNKNOWN),
    (b"UNSUB\r\n", UNKNOWN),
    (b"UNSUBX 1\r\n", UNKNOWN),
    (b"-ERR\r\n", UNKNOWN),
    (b"-ERRx\r\n", UNKNOWN),
    (b"MSG foo 1 3\r\nabc\r\n", UNKNOWN),
    (b"HMSG foo 1 3 3\r\n", UNKNOWN),
    # unknown operations found before the newline arrives
    (b"FOO", UNKNOWN),
    (b"X" * 5000, UNKNOWN),
    (b"PUB\r", UNKNOWN),
    # payload not followed by exactly CRLF
    (b"PUB foo 3\r\nabcd\r\n", UNKNOWN),
    (b"PUB foo 3\r\nabc\n", UNKNOWN),
    (b"PUB foo 3\r\nab\r\n", UNKNOWN),
    (b"PUB foo 3\r\n\r\n\r\n", UNKNOWN),
    (b"PUB foo 3\r\nabc\r\r", UNKNOWN),
    (b"PUB foo 3\r\nabcX", UNKNOWN),
    (b"PUB foo 3\r\nabc\rXYZ", UNKNOWN),
    (b"HPUB foo 12 13\r\nNATS/1.0\r\n\r\nab\r\n", UNKNOWN),
    # PUB/HPUB/SUB/UNSUB arguments: nats-server closes without -ERR
    (b"PUB foo\r\n", PARSE),
    (b"PUB \r\n", PARSE),
    (b"PUB  \t \r\n", PARSE),
    (b"PUB a b c d\r\n", PARSE),
    (b"PUB foo x\r\n", SIZE),
    (b"PUB foo -1\r\n", SIZE),
    (b"PUB foo +3\r\nabc\r\n", SIZE),
    (b"PUB foo 3x\r\n", SIZE),
    (b"PUB foo 99999999999999999999999\r\n", SIZE),
    (b"PUB foo 1000000000\r\n", SIZE),
    (b"PUB foo 0000000003\r\nabc\r\n", SIZE),
    (b"HPUB foo 3\r\n", PARSE),
    (b"HPUB a b c d e\r\n", PARSE),
    (b"HPUB foo 5 3\r\n", HEADER_TOO_BIG),
    (b"HPUB foo 2000000 1048577\r\n", HEADER_TOO_BIG),
    (b"HPUB foo x 3\r\n", HEADER_SIZE),
    (b"HPUB foo 0000000000 3\r\n", HEADER_SIZE),
    (b"HPUB foo 3 x\r\n", SIZE),
    (b"SUB foo\r\n", PARSE),
    (b"SUB \r\n", PARSE),
    (b"SUB a b c d\r\n", PARSE),
    (b"UNSUB \r\n", PARSE),
    (b"UNSUB 1 2 3\r\n", PARSE),
    # CONNECT and INFO that Go's json cannot decode into nats-server's structs
    (b"CONNECT\r\n", JSON),
    (b"CONNECTX {}\r\n", JSON),
    (b"CONNECT x\r\n", JSON),
    (b"CONNECT []\r\n", JSON),
    (b"CONNECT 1\r\n", JSON),
    (b'CONNECT {"verbose":true} x\r\n', JSON),
    (b'CONNECT {"verbose":false}{}\r\n', JSON),
    (b'CONNECT {"verbose":1}\r\n', JSON),
    (b'CONNECT {"echo":"x"}\r\n', JSON),
    (b'CONNECT {"headers":1}\r\n', JSON),
    (b'CONNECT {"protocol":"1"}\r\n', JSON),
    (b'CONNECT {"protocol":1.0}\r\n', JSON),
    (b'CONNECT {"protocol":1e0}\r\n', JSON),
    (b'CONNECT {"protocol":true}\r\n', JSON),
    (b'CONNECT {"protocol":99999999999999999999}\r\n', JSON),
    (b'CONNECT {"name":1}\r\n', JSON),
    (b'CONNECT {"user":5}\r\n', JSON),
    (b"INFO\r\n", JSON),
    (b"INFOX {}\r\n", JSON),
    (b"INFO x\r\n", JSON),
    (b"INFO []\r\n", JSON),
    # limits
    (b"PUB foo 1048577\r\n", PAYLOAD),
    (b"PUB foo 10485760\r\n", PAYLOAD),
    (b"PUB foo 999999999\r\n", PAYLOAD),
    (b"HPUB foo 2 1048577\r\n", PAYLOAD),
    (b"SUB " + b"a" * 4095 + b" 1\r\n", CONTROL_LINE),
    (b"SUB " + b"a" * 4094 + b" 1 \r\n", CONTROL_LINE),
    (b"SUB " + b"a" * 5000, CONTROL_LINE),
    (b'CONNECT {"name":"' + b"x" * 5000 + b'"}\r\n', CONTROL_LINE),
]
