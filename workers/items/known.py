"""What is known about a claimed item: the :class:`~workers.items.decide.Known` of its rows."""

from __future__ import annotations

from sqlalchemy.orm import Session

from workers.db import repository as repo
from workers.db.session import session_scope
from workers.errors import CapacityUnavailableError, ItemError, RateLimitedError
from workers.items.decide import Known


def known_of(item: repo.ClaimedItem, error: ItemError | None, *, session: Session | None = None,
             repairing: bool = False, cooldown: float | None = None) -> Known:
    """The facts a decision about ``item`` needs, after ``error`` (None: a valid answer).

    The no-fault counts (429s, flex refusals) are read only when the error is one of them, in
    ``session`` if given. The call's own attempt is not yet recorded, so it is added here.
    """
    rate_limited = capacity_refused = 0
    if isinstance(error, RateLimitedError | CapacityUnavailableError):
        if session is None:
            with session_scope() as own:
                counted = repo.count_attempts(own, item.id, outcome=error.error_class) + 1
        else:
            counted = repo.count_attempts(session, item.id, outcome=error.error_class) + 1
        if isinstance(error, RateLimitedError):
            rate_limited = counted
        else:
            capacity_refused = counted
    return Known(error=error, attempts=item.attempts, rate_limited=rate_limited,
                 capacity_refused=capacity_refused, repairing=repairing, cooldown=cooldown,
                 has_parent=item.parent_id is not None, run_id=item.run_id)
