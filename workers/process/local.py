"""Objects that must not cross a fork: one per (process, key), made on first use.

Connection pools (HTTP, Redis, database) inherited by a forked child would share sockets with
the parent. Keying by process id makes every worker process build its own after the fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class PerProcess(Generic[K, V]):
    """A thread-safe map from key to an object owned by the current process."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, K], V] = {}
        self._lock = threading.Lock()

    def get(self, key: K, factory: Callable[[], V]) -> V:
        """This process's object for ``key``, made by ``factory`` the first time."""
        slot = (os.getpid(), key)
        value = self._items.get(slot)
        if value is None:
            with self._lock:
                value = self._items.get(slot)
                if value is None:
                    value = factory()
                    self._items[slot] = value
        return value

    def take_inherited(self) -> list[V]:
        """Remove and return the objects made by other processes (inherited through fork)."""
        with self._lock:
            return self._take(lambda pid: pid != os.getpid())

    def take_own(self) -> list[V]:
        """Remove and return the objects this process made, to be closed."""
        with self._lock:
            return self._take(lambda pid: pid == os.getpid())

    def _take(self, which: Callable[[int], bool]) -> list[V]:
        taken = [slot for slot in self._items if which(slot[0])]
        return [self._items.pop(slot) for slot in taken]
