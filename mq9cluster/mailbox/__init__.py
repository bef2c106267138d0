"""The mailbox layer: mq9 semantics (dialect parsing, validation, replies, the pure apply of
mailbox ops onto the store, replay and live delivery in priority order). It reaches Raft only
through the ``Committer`` interface and the read barrier, and the server only through the
``Subscriber`` objects and the reply callable it is given (wired in ``mq9cluster.app``).
"""
