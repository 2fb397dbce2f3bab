"""Between an item's rows and the decision core: the facts read, and a failure written.

Both the live path and the Batch API collector call these inside the transaction that writes
the decision, so the counts a decision rests on and the decision's writes are one commit.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from workers.db import repository as repo
from workers.errors import CapacityUnavailableError, ItemError, RateLimitedError
from workers.items.decide import FailWith, Known, clip


def known_of(session: Session, item: repo.ClaimedItem, error: ItemError | None, *,
             repairing: bool = False, cooldown: float | None = None) -> Known:
    """The facts a decision about ``item`` needs, after ``error`` (None: a valid answer).

    The no-fault counts (429s, flex refusals) are read only when the error is one of them.
    The call's own attempt is not recorded yet, so it is added here.
    """
    rate_limited = capacity_refused = 0
    if isinstance(error, RateLimitedError | CapacityUnavailableError):
        counted = repo.count_attempts(session, item.id, outcome=error.error_class) + 1
        if isinstance(error, RateLimitedError):
            rate_limited = counted
        else:
            capacity_refused = counted
    return Known(error=error, attempts=item.attempts, rate_limited=rate_limited,
                 capacity_refused=capacity_refused, repairing=repairing, cooldown=cooldown,
                 has_parent=item.parent_id is not None, run_id=item.run_id,
                 pipeline=item.pipeline)


def write_failure(session: Session, item: repo.ClaimedItem, failed: FailWith) -> None:
    """Fail the item and, for a part of a long document, every reduce above it."""
    repo.fail_item(session, item.id, error_class=failed.error_class, code=failed.code,
                   message=failed.message)
    if failed.ancestors:
        fail_ancestors(session, item, failed)


def fail_ancestors(session: Session, item: repo.ClaimedItem, failed: FailWith) -> None:
    """Fail the reduces above a failed part, naming the part."""
    repo.fail_ancestors(session, item.id, code=failed.code, message=clip(
        f"part {item.chunk_index} of the document failed: {failed.message}"))
