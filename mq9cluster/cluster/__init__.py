"""Raft replication: the only importer of pysyncobj.

Owns the replicated object (bytes in, bytes out), the durable journal (``journal``), group commit,
snapshots and membership. Must not touch sockets of the client protocol or mailbox semantics; it
reaches the store for snapshots only. ``journal.install_durable_journal()`` is the one place that
points pysyncobj at the durable log: call it before creating a SyncObj.
"""
