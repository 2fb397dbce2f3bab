"""The Redis side of admission control: this process's client, and the Lua scripts.

The scripts live in ``lua/*.lua`` beside this module, one per atomic step of the limiter and
the breaker; :func:`load_script` reads one, and :class:`ScriptBatch` runs several in one round
trip.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from workers.process.local import PerProcess


def load_script(name: str) -> str:
    """The source of ``lua/<name>.lua``, shipped with the package."""
    return resources.files("workers.admission").joinpath("lua", f"{name}.lua").read_text()


class ScriptBatch:
    """Lua scripts queued together and run in one round trip.

    redis-py's ``Script`` on a pipeline first asks ``SCRIPT EXISTS``: a second round trip, the
    one a batch is for. Here each script goes as a bare ``EVALSHA``; one that Redis no longer
    knows (a restart empties its script cache) is loaded and run again on its own, so no
    script runs twice.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._calls: list[tuple[Script, list[Any], list[Any]]] = []

    def add(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        """Queue ``script`` to run with ``keys`` and ``args``."""
        self._calls.append((script, keys, args))

    def execute(self) -> list[Any]:
        """Run every queued script; return their results in order. Raises the first error."""
        if not self._calls:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args in self._calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
        for i, (script, keys, args) in enumerate(self._calls):
            if isinstance(results[i], redis.exceptions.NoScriptError):
                results[i] = script(keys=keys, args=args)  # loads it, then runs it
        self._calls.clear()
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results


def run_script(script: Script, batch: ScriptBatch | None, *, keys: list[Any], args: list[Any]
         ) -> Any:
    """Run ``script`` now, or queue it on ``batch``."""
    if batch is None:
        return script(keys=keys, args=args)
    batch.add(script, keys, args)
    return None


_clients: PerProcess[str, redis.Redis] = PerProcess()


def redis_client(url: str) -> redis.Redis:
    """A Redis client for ``url`` owned by this process."""
    return _clients.get(url, lambda: redis.Redis.from_url(
        url, health_check_interval=30, socket_timeout=10, socket_connect_timeout=5))
