"""Seed inputs of the fuzz targets; imports nothing of mq9cluster (atheris instruments those imports)."""

#: Starting inputs for the mutating fuzzers: one of each frame kind and of each request kind.
SEEDS = {
    "parser": [
        b"\x00CONNECT {\"verbose\":false}\r\nPING\r\nPUB foo 3\r\nabc\r\nSUB foo q 1\r\nUNSUB 1 5\r\n",
        b"\x04HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nab\r\n",
        b"\x01MSG foo 1 r 2\r\nhi\r\nHMSG a 2 12 12\r\nNATS/1.0\r\n\r\n\r\n+OK\r\n-ERR 'x'\r\n",
        b"\x06RS+ foo q 1\r\nRS- foo\r\nRMSG foo r | q 2\r\nhi\r\nINFO {}\r\n",
        b"\x08PUB foo 99999999999\r\n",
    ],
    "mq9": [
        b"MAILBOX.CREATE\0{\"ttl\": 60, \"public\": true, \"name\": \"svc.jobs\", \"desc\": \"d\"}",
        b"MAILBOX.abcdefghijklmnopqrstuvwxyz.urgent\0{}",
        b"MAILBOX.MSG.abc.critical\0null",
        b"MAILBOX.DELETE.abc.17\0[1]",
        b"PUBLIC.LIST\0{\"ttl\": -1}",
    ],
}
