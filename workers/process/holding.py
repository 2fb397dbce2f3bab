"""What this process holds: its heartbeat token, and the items its tasks are working on.

Every claim records the claiming process's token (``Item.holder``), and the process's
heartbeat (:mod:`workers.runtime.heartbeat`) renews the leases of the items held here. An
item is registered before it is claimed and until its last write, so a claim of this
process's is never found without its registration.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

_lock = threading.Lock()
_held: Counter[int] = Counter()
_since: dict[int, float] = {}
_token: tuple[int, str] | None = None


def token() -> str:
    """This process's holder token, ``host:pid:nonce``: new in a forked child, and new after
    an exec in place (which keeps the pid), so a restarted process never passes for its
    predecessor."""
    global _token
    pid = os.getpid()
    current = _token
    if current is None or current[0] != pid:
        with _lock:
            current = _token
            if current is None or current[0] != pid:
                current = (pid, f"{socket.gethostname()[:80]}:{pid}:{secrets.token_hex(4)}")
                _token = current
                _held.clear()  # a forked child holds nothing of its parent's
                _since.clear()
    return current[1]


def hold(item_ids: Iterable[int]) -> None:
    """Register ``item_ids`` as worked on by this process, until :func:`release`."""
    ids = list(item_ids)
    token()
    now = time.monotonic()
    with _lock:
        for item_id in ids:
            if not _held[item_id]:
                _since[item_id] = now
            _held[item_id] += 1


def release(item_ids: Iterable[int]) -> None:
    """Undo one :func:`hold` of ``item_ids``."""
    with _lock:
        for item_id in item_ids:
            _held[item_id] -= 1
            if _held[item_id] <= 0:
                del _held[item_id]
                _since.pop(item_id, None)


@contextlib.contextmanager
def holding(item_ids: Iterable[int]) -> Iterator[None]:
    """Register ``item_ids`` as worked on by this process for the duration of the block."""
    ids = list(item_ids)
    hold(ids)
    try:
        yield
    finally:
        release(ids)


def held(max_age: float | None = None) -> list[int]:
    """The items this process works on, those registered less than ``max_age`` s ago only
    if given (a task past its time limit is hung: its lease is left to run out)."""
    now = time.monotonic()
    with _lock:
        return sorted(item_id for item_id, since in _since.items()
                      if max_age is None or now - since < max_age)
