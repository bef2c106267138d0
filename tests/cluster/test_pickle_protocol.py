"""pysyncobj pickles log commands with protocol 4 once the Raft adapter is loaded, and still reads
commands pickled with its own protocol 2 (journals written before)."""

from __future__ import annotations

import os
import pickle

import pysyncobj.pickle as pysyncobj_pickle

from mq9cluster.cluster import raft


def test_commands_pickle_with_protocol_4_and_old_ones_still_load() -> None:
    entry = os.urandom(35_000)  # binary payloads, as a batch of sends carries
    command = (0, (entry,), {})
    pickled = pysyncobj_pickle.dumps(command)
    assert raft.PICKLE_PROTOCOL == 4 and pickled[:2] == b"\x80\x04"
    assert len(pickled) < len(entry) + 100  # protocol 2 takes about 1.5x
    assert pysyncobj_pickle.loads(pickled) == command
    assert pysyncobj_pickle.loads(pickle.dumps(command, 2)) == command
