"""The item state machine, written down once: every state, every transition, who makes it.

Each transition names the states it may start from. :mod:`workers.db.repository.items`
writes ``Item.status`` with one function per transition, each guarded by exactly these
states in its ``UPDATE ... WHERE``; a test checks that no other code writes the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum, nonmember


class ItemStatus(StrEnum):
    """Item states. ``succeeded`` and ``failed`` are terminal."""

    PENDING = "pending"  # written, message not yet sent
    QUEUED = "queued"  # message sent
    RUNNING = "running"  # claimed by a worker under a lease
    RETRY = "retry"  # waiting until not_before
    BLOCKED = "blocked"  # a reduce waiting for the results of its parts
    BATCHED = "batched"  # sent in a Batch API batch, waiting for it to end
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    TERMINAL = nonmember(("succeeded", "failed"))


S = ItemStatus
#: Every state an item can be in.
ALL: frozenset[ItemStatus] = frozenset(S)
#: Every state but the terminal ones.
OPEN: frozenset[ItemStatus] = ALL - {S.SUCCEEDED, S.FAILED}


@dataclass(frozen=True)
class Transition:
    """A change of an item's status: from any of ``sources`` to ``target``, made by ``by``."""

    name: str
    sources: frozenset[ItemStatus]
    target: ItemStatus
    by: str

    def allows(self, status: str) -> bool:
        """Whether an item in ``status`` may make this transition."""
        return status in self.sources


def _t(name: str, sources: set[ItemStatus] | frozenset[ItemStatus], target: ItemStatus,
       by: str) -> Transition:
    return Transition(name, frozenset(sources), target, by)


#: A message was sent for a fresh item.
QUEUE = _t("queue", {S.PENDING}, S.QUEUED, "ingest and reprocess, after publishing")
#: Another message was sent for an item that is waiting (``docpipe replay``).
RESEND = _t("resend", {S.PENDING, S.QUEUED}, S.QUEUED, "replay, after publishing")
#: The reconciler sends an item again: never sent, lost by the broker, due, or held by a
#: worker whose lease ran out.
REQUEUE = _t("requeue", {S.PENDING, S.QUEUED, S.RETRY, S.RUNNING}, S.QUEUED, "the reconciler")
#: A worker takes the item under a lease (a RETRY only once due, a RUNNING one only once its
#: lease has expired: that counts a lost worker).
CLAIM = _t("claim", {S.PENDING, S.QUEUED, S.RETRY, S.RUNNING}, S.RUNNING, "a worker")
#: The worker process holding the item is dead (its heartbeat stopped): the claim is void,
#: counts a lost worker, and the item is sent again at once.
VOID_DEAD = _t("void_dead", {S.RUNNING}, S.QUEUED, "the dead-holder sweep")
#: Every part of a reduce has succeeded: the reduce can be sent.
UNBLOCK = _t("unblock", {S.BLOCKED}, S.QUEUED, "the worker that finished the last part")
#: An answer is stored. A paid answer is never thrown away: one that arrives after its lease
#: ran out, after another worker's success, or after its run was cancelled still completes
#: the item with the same result.
SUCCEED = _t("succeed", ALL, S.SUCCEEDED, "a worker, the batch collector, or a reuse")
#: The call failed in a way worth another try, later.
RETRY = _t("retry", {S.RUNNING}, S.RETRY, "the lease holder")
#: A wait that is nobody's fault (no budget yet, breaker open): the claim does not count.
PARK = _t("park", {S.RUNNING}, S.RETRY, "the lease holder")
#: The run was paused under the worker: the claim does not count.
RELEASE = _t("release", {S.RUNNING}, S.PENDING, "the lease holder")
#: Processing raised (an infrastructure error): due again later, or failed.
RELEASE_AFTER_ERROR = _t("release_after_error", {S.RUNNING}, S.RETRY,
                         "the lease holder, on an infrastructure error")
RELEASE_AFTER_ERROR_FAILED = _t("release_after_error", {S.RUNNING}, S.FAILED,
                                "the lease holder, on an infrastructure error")
#: The item cannot be done. A done item is never failed afterwards (a late error from a
#: worker that outlived its lease changes nothing).
FAIL = _t("fail", OPEN, S.FAILED,
          "the lease holder, the batch collector, or a failed part (for its reduces)")
#: ``docpipe cancel``: what has not been sent fails as cancelled.
CANCEL = _t("cancel", {S.PENDING, S.QUEUED, S.RETRY, S.BLOCKED}, S.FAILED, "docpipe cancel")
#: ``docpipe replay``: back to the start, attempts reset. Never an item a worker or a batch
#: holds, nor a reduce still waiting for its parts.
REPLAY = _t("replay", {S.FAILED, S.SUCCEEDED, S.RETRY, S.PENDING, S.QUEUED}, S.PENDING,
            "docpipe replay")
#: A batch run's items go into a Batch API batch.
BATCH = _t("batch", {S.PENDING, S.QUEUED, S.RETRY}, S.BATCHED, "the batch submitter")
#: A batch never reached the provider, or one of its lines deserves another try: the item
#: waits for the next batch.
UNBATCH = _t("unbatch", {S.BATCHED}, S.PENDING, "the batch submitter and collector")
#: A batch run's item goes to the live workers, so the run meets its deadline.
SEND_LIVE = _t("send_live", {S.BATCHED, S.PENDING, S.QUEUED, S.RETRY}, S.QUEUED,
               "the batch collector")

#: Every transition; items are created (ingest) as pending, blocked (a reduce) or failed
#: (an unreadable source).
TRANSITIONS: tuple[Transition, ...] = (
    QUEUE, RESEND, REQUEUE, CLAIM, VOID_DEAD, UNBLOCK, SUCCEED, RETRY, PARK, RELEASE,
    RELEASE_AFTER_ERROR, RELEASE_AFTER_ERROR_FAILED, FAIL, CANCEL, REPLAY, BATCH, UNBATCH,
    SEND_LIVE,
)
#: The states an item is created in.
INITIAL: frozenset[ItemStatus] = frozenset({S.PENDING, S.BLOCKED, S.FAILED})


def reachable(status: str, target: str) -> bool:
    """Whether some single transition takes an item from ``status`` to ``target``."""
    return any(t.allows(status) and t.target == target for t in TRANSITIONS)
