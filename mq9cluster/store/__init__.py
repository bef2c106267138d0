"""The store layer: mailbox state in RocksDB, the only importer of rocksdict.

Owns the key layout (``keys``, with FORMAT_VERSION), the value codecs (``codecs``), atomic
batches that write ``last_applied`` with the state they produce (``batch``), checkpoints,
snapshots, their install and restore (``store``), the generation directories and the pointer
that make an install atomic (``generations``) and typed read views (``reads``). Must not import
Raft, NATS or any other mq9cluster package but ``errors``. Layout and durability contract: docs/storage.md.
"""

from mq9cluster.store.batch import Batch
from mq9cluster.errors import AlreadyApplied, NoSuchMailbox, StoreError, StoreFormatError
from mq9cluster.store.keys import FORMAT_VERSION
from mq9cluster.store.reads import MessageScan
from mq9cluster.store.records import Expiry, Mailbox, Message, MessageSummary, Priority
from mq9cluster.store.store import DEDUP_WINDOW, Store

__all__ = [
    "DEDUP_WINDOW", "FORMAT_VERSION", "AlreadyApplied", "Batch", "Expiry", "Mailbox", "Message",
    "MessageScan", "MessageSummary", "NoSuchMailbox", "Priority", "Store", "StoreError",
    "StoreFormatError",
]
