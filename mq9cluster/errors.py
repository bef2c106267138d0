"""The one exception tree of mq9cluster. Every error the broker raises on purpose derives from Mq9Error."""

from __future__ import annotations


class Mq9Error(Exception):
    """Base of every mq9cluster error."""


class ConfigError(Mq9Error):
    """Settings are missing, malformed or contradictory; the message says which and why."""


class PermissionDenied(Mq9Error):
    """A client may not do this; the message is the NATS -ERR text (without quotes)."""


class JournalCorrupt(Mq9Error):
    """The Raft log or its metadata is damaged beyond a torn tail; the node must not start."""


class DataDamaged(Mq9Error):
    """This node's data is damaged and it did not rebuild itself; the message says why not."""


class ProposalFailed(Mq9Error):
    """A proposal was not applied here; retrying is safe once the command is idempotent.

    ``maybe_applied`` is False when the entry is known not to be in the committed log (it was never
    appended, or another entry took its index) and True when it may still commit (timeout, leader
    change after forwarding, node stopped): a retry must then be deduplicated by the state machine.
    """

    def __init__(self, reason: str, *, maybe_applied: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.maybe_applied = maybe_applied


class NotLeader(ProposalFailed):
    """No leader took the proposal; ``leader_hint`` is the leader this node knows of, if any."""

    def __init__(self, reason: str, leader_hint: str | None, *, maybe_applied: bool) -> None:
        super().__init__(f"{reason} (leader: {leader_hint or 'unknown'})", maybe_applied=maybe_applied)
        self.leader_hint = leader_hint


class NodeStopped(ProposalFailed):
    """This node's Raft stopped (shutdown or a fatal error): retrying here is pointless."""

    def __init__(self, reason: str = "raft node stopped", *, maybe_applied: bool) -> None:
        super().__init__(reason, maybe_applied=maybe_applied)


class NoQuorum(NotLeader):
    """This node has known no leader for ``RaftTuning.leader_wait``: it is cut off from its quorum
    (or elections keep failing), so it refuses at once instead of letting the request wait."""

    def __init__(self, reason: str, *, maybe_applied: bool) -> None:
        super().__init__(reason, None, maybe_applied=maybe_applied)


class ClusterAdminError(Mq9Error):
    """A membership or status command could not be carried out; the message says where and why."""


class MembershipUnknown(ClusterAdminError):
    """A membership change was proposed and not confirmed: it may commit later, or never.

    Running the same command again converges: it reports the change done once it has committed,
    and proposes it again if it was lost."""


class SnapshotCorrupt(Mq9Error):
    """A snapshot file is truncated, foreign or fails its checksum."""


class StoreError(Mq9Error):
    """The store cannot do what was asked; the message says which store and why."""


class StoreCorrupt(StoreError):
    """The store's files are damaged: RocksDB reports corruption, or the store lost its format stamp."""


class StoreFormatError(StoreError):
    """The directory holds a store of another format version, or no mq9cluster store at all."""


class NoSuchMailbox(StoreError):
    """A batch mutation named a mailbox that does not exist in the batch's view.

    Apply code checks ``Batch.has_mailbox`` first and turns absence into a user error result;
    reaching this exception is a bug in the caller.
    """


class AlreadyApplied(StoreError):
    """A batch was opened or committed for a Raft index at or below ``last_applied``."""
