"""Worker heartbeats: every process that claims items says, every few seconds, that it lives,
and looks for those that stopped.

Each worker process that can hold items writes its row in ``worker_processes`` every
``heartbeat_seconds`` (:func:`workers.db.repository.beat`), under the token its claims name
(:mod:`workers.process.holding`). The same beat renews the leases of the items its tasks
work on, so a long call is never taken over while its process lives: the lease is only the
backstop for a live process that hangs on one item (an item held longer than the task's
time limit is no longer renewed).

Then it sweeps (:func:`sweep`), so recovery never waits for beat: a holder whose last beat
is older than ``holder_timeout_seconds`` is dead. In one transaction, under a lock that lets
one sweep at a time run across the fleet, its claims are voided (each a lost worker, its
in-flight calls recorded lost) and its row removed; after the commit its items are sent
again, and the messages it had received but not acknowledged (those it was working on, and
those waiting in its prefetch) are put back on their queues with kombu's own restore,
instead of waiting out the broker's visibility timeout. For that, the process that consumes
the messages keeps the set of delivery tags it received in Redis, pruned at each beat to
those still unacknowledged. A message delivered longer than a holder timeout ago that no
living process received is stray (its consumer died before it could note it, or a Redis
restart kept the delivery and lost the consumer's connection): it is put back too.

A database outage only delays the beats: the thread logs once, keeps trying, and says when
it is back; then it writes the releases this process could not write meanwhile (the items
stay held, and their leases renewed, until then). A process judges others only once its own
beats have gone on without a gap for a whole holder timeout: after an outage (or after this
process was stopped) every row looks old, and the live workers must have beaten again before
anyone is found dead.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import redis

from workers.admission.scripts import redis_client
from workers.db import repository as repo
from workers.db.models import utcnow
from workers.db.session import (
    application_name,
    is_outage,
    name_connections,
    session_scope,
)
from workers.errors import brief
from workers.process import holding
from workers.settings import Settings, get_settings, redacted

log = logging.getLogger("docpipe.worker")

#: Sends items again: ``publish(item_ids, queue=...)`` (the tasks' ``send_items``).
Publisher = Callable[..., None]
#: Puts back on their queues the unacknowledged messages of the dead consumers (first
#: argument) and those no living process (second) received; returns how many.
Restorer = Callable[[Sequence[str], Sequence[str]], int]

#: The delivery tags a consuming process has received and not yet acknowledged.
DELIVERIES_KEY = "docpipe:deliveries:{token}"
#: kombu's Redis transport keeps delivered, unacknowledged messages in this hash...
UNACKED_KEY = "unacked"
#: ... and their delivery times in this sorted set.
UNACKED_INDEX_KEY = "unacked_index"


def may_sweep(up_since: float | None, now: float, bound: float) -> bool:
    """Whether a process whose beats have gone on without a gap since ``up_since`` may judge
    others dead: only once that has lasted the whole ``bound``."""
    return up_since is not None and now - up_since >= bound


def is_gap(last_ok: float | None, now: float, interval: float) -> bool:
    """Whether the time since the last successful beat is a gap (the process was stopped, or
    the database unreachable), after which the beats' continuity starts again."""
    return last_ok is None or now - last_ok > 2.5 * interval


@dataclass(frozen=True)
class Swept:
    """What one sweep did: the dead processes found, and the items sent again."""

    dead: tuple[str, ...] = ()
    sent: int = 0
    restored: int = 0


class Heartbeat:
    """One process's heartbeat."""

    def __init__(self, settings: Settings, *, publish: Publisher | None = None,
                 restore: Restorer | None = None, consumer: bool = False) -> None:
        self.settings = settings
        #: None: this process beats but does not sweep.
        self.publish = publish
        self.restore = restore
        #: This process receives the messages: it keeps its set of deliveries.
        self.consumer = consumer
        self.token = holding.token()
        self.beats = 0
        self.failing = False
        self.failing_since = 0.0
        #: When this process's beats last started again without a gap (monotonic seconds).
        self.up_since: float | None = None
        self.last_ok: float | None = None
        self._stop = threading.Event()

    def beat(self) -> bool:
        """Beat once: the row, then the leases of the items held here; then sweep, if this
        process may. False when the database could not be reached (the next beat tries
        again)."""
        settings = self.settings
        try:
            with session_scope() as session:
                anew = repo.beat(session, self.token, host=socket.gethostname(),
                                 pid=os.getpid())
                repo.renew_leases(session, holding.held(settings.task_time_limit_seconds),
                                  holder=self.token, lease_seconds=settings.lease_seconds)
        except Exception as exc:  # the database is away: beat again later
            if not self.failing:
                self._log_failure(exc)
                self.failing = True
                self.failing_since = time.monotonic()
            return False
        if anew and self.beats:
            log.warning("this worker process's heartbeat row (%s) was gone: written again",
                        self.token)
        if self.failing:
            log.info("worker heartbeat is back: the database %s answered again after %.1f s",
                     redacted(get_settings().database_url),
                     time.monotonic() - self.failing_since)
            self.failing = False
        self.beats += 1
        now = time.monotonic()
        if is_gap(self.last_ok, now, settings.heartbeat_seconds):
            self.up_since = now
        self.last_ok = now
        if self.consumer:
            self._prune_deliveries()
        self._release_kept()
        if self.publish is not None and may_sweep(self.up_since, now,
                                                  settings.holder_timeout_seconds):
            try:
                sweep(settings, publish=self.publish, restore=self.restore)
            except Exception as exc:  # the next beat sweeps again
                log.warning("the dead-holder sweep failed (%s)", brief(exc))
        return True

    def _log_failure(self, exc: Exception) -> None:
        """One line for the whole outage: the service, its URL, the cause, and what now."""
        every = self.settings.heartbeat_seconds
        if is_outage(exc):
            log.warning("worker heartbeat failed: the database %s could not be reached (%s); "
                        "this worker keeps its items and tries again every %g s",
                        redacted(get_settings().database_url), brief(exc), every)
        else:
            log.warning("worker heartbeat failed (%s); retrying every %g s", brief(exc), every)

    def _release_kept(self) -> None:
        """The releases this process could not write during an outage, written now that the
        database answers (:class:`workers.items.group.Unreleased`)."""
        group = sys.modules.get("workers.items.group")
        if group is None:  # no item was ever claimed here, so none is kept (and no import)
            return
        kept = group.unreleased()
        if len(kept) and (released := kept.release(self.settings)):
            log.info("released %d items held through a database outage", released)

    def _prune_deliveries(self) -> None:
        try:
            settled = _received.settled()
            prune_deliveries(redis_client(self.settings.effective_broker_url), self.token,
                             settled=settled)
            _received.forget(settled)
        except redis.RedisError:  # the broker is away: the set waits for the next beat
            log.debug("could not prune this worker's deliveries", exc_info=True)

    def run(self) -> None:
        """Beat every ``heartbeat_seconds`` until :meth:`stop`."""
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # never let the heartbeat thread die
                log.exception("worker heartbeat failed")

    def stop(self) -> None:
        """Stop beating and remove this process's row: it ended cleanly."""
        self._stop.set()
        try:
            with session_scope() as session:
                repo.forget_workers(session, [self.token])
        except Exception:  # its row only ages; nothing holds on to it
            log.debug("could not remove this worker's heartbeat row", exc_info=True)


_current: Heartbeat | None = None
_current_pid: int | None = None


def start(settings: Settings, *, publish: Publisher | None = None,
          restore: Restorer | None = None, consumer: bool = False) -> Heartbeat:
    """Start this process's heartbeat in a daemon thread, beating once first. With
    ``publish`` it also sweeps for dead holders, sends their items again with it and puts
    their messages back with ``restore``; a ``consumer`` keeps its set of deliveries."""
    global _current, _current_pid
    name_connections(holding.token())
    heartbeat = Heartbeat(settings, publish=publish, restore=restore, consumer=consumer)
    heartbeat.beat()
    thread = threading.Thread(target=heartbeat.run, name="docpipe-heartbeat", daemon=True)
    thread.start()
    _current, _current_pid = heartbeat, os.getpid()
    return heartbeat


def current() -> Heartbeat | None:
    """This process's heartbeat, if it runs one (a forked child has its own, or none)."""
    return _current if _current_pid == os.getpid() else None


def stop() -> None:
    """Stop this process's heartbeat, if it runs one."""
    heartbeat = current()
    if heartbeat is not None:
        heartbeat.stop()


def sweep(settings: Settings, *, publish: Publisher, restore: Restorer | None = None
          ) -> Swept:
    """Void the claims of dead worker processes, send their items again and put back the
    messages they had received. One sweep at a time across the fleet (another one running:
    this one does nothing)."""
    cutoff = utcnow() - timedelta(seconds=settings.holder_timeout_seconds)
    with session_scope() as session:
        if not repo.take_sweep_lock(session):
            return Swept()
        dead = repo.dead_workers(session, cutoff)
        # A stopped holder's open transaction would keep its items locked (and skipped
        # below) until it woke up: its sessions end now, and what they locked is voided at
        # the next sweep, as claims of a holder with no row.
        repo.end_sessions(session, [application_name(token) for token in dead])
        claims = repo.claims_of_the_dead(session, dead, cutoff)
        voided = {queue: repo.void_dead_claims(session, ids) for queue, ids in claims.items()}
        repo.forget_workers(session, dead)
        living = [worker.id for worker in repo.live_workers(session, cutoff)]
    sent = _send(voided, publish)
    restored = 0
    if restore is not None:
        try:
            restored = restore(dead, living)
        except Exception as exc:  # the visibility timeout stays the backstop
            log.warning("could not put back the messages of dead or gone consumers (%s)",
                        brief(exc))
    if dead or sent:
        log.warning("dead worker processes (no heartbeat for %g s): %s; %d items they held "
                    "sent again, %d messages no living process holds put back on their "
                    "queues", settings.holder_timeout_seconds,
                    ", ".join(dead) or "none with a heartbeat row", sent, restored)
    elif restored:
        log.warning("%d messages delivered over %g s ago that no living process received "
                    "put back on their queues", restored, settings.holder_timeout_seconds)
    return Swept(tuple(dead), sent, restored)


def _send(by_queue: dict[str, list[int]], publish: Publisher) -> int:
    sent = 0
    for queue, ids in by_queue.items():
        if not ids:
            continue
        try:
            publish(sorted(ids), queue=queue)
        except Exception as exc:  # queued in the database: the reconciler sends them
            log.warning("could not send %d items of dead holders again (%s); the "
                        "reconciler will", len(ids), brief(exc))
            continue
        sent += len(ids)
    return sent


def record_delivery(client: redis.Redis, token: str, delivery_tag: str, *,
                    ttl_seconds: int) -> None:
    """Note that the consuming process ``token`` received the message ``delivery_tag``."""
    key = DELIVERIES_KEY.format(token=token)
    pipe = client.pipeline(transaction=False)
    pipe.sadd(key, delivery_tag)
    pipe.expire(key, ttl_seconds)
    pipe.execute()


def prune_deliveries(client: redis.Redis, token: str, *, settled: Iterable[str] = ()) -> None:
    """Forget the deliveries ``token`` has acknowledged (kombu removed them from its unacked
    hash), and those it is done with (``settled``: their tasks ended and Celery acknowledged
    them) although they are still unacked. That happens when the ack was sent while Redis
    was restarting: Celery logs it and moves on, the AOF keeps the delivery, and only the
    sweep's stray rule can put it back, once no living process claims it."""
    key = DELIVERIES_KEY.format(token=token)
    tags = list(client.smembers(key))
    if not tags:
        return
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.hexists(UNACKED_KEY, tag)
    done = set(settled)
    acked = [tag for tag, held in zip(tags, pipe.execute(), strict=True)
             if not held or _text(tag) in done]
    if acked:
        client.srem(key, *acked)


class Received:
    """The requests this consuming process received, by delivery tag, until Celery is done
    with them (it acknowledged them, or dropped the request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, weakref.ref[Any]] = {}

    def note(self, delivery_tag: str, request: Any) -> None:
        try:
            ref = weakref.ref(request)
        except TypeError:  # not a request Celery keeps: nothing to follow
            return
        with self._lock:
            self._requests[delivery_tag] = ref

    def settled(self) -> list[str]:
        """The tags whose requests are acknowledged or gone."""
        with self._lock:
            return [tag for tag, ref in self._requests.items()
                    if (request := ref()) is None or getattr(request, "acknowledged", False)]

    def forget(self, tags: Iterable[str]) -> None:
        with self._lock:
            for tag in tags:
                self._requests.pop(tag, None)


#: This process's received requests (the consumer's: a threads worker's main process).
_received = Received()


def note_received(delivery_tag: str, request: Any) -> None:
    """Follow the request of ``delivery_tag`` until Celery is done with it (see
    :func:`prune_deliveries`)."""
    _received.note(delivery_tag, request)


def deliveries_of(client: redis.Redis, token: str) -> list[str]:
    """The deliveries a (dead) consuming process received and did not acknowledge; the set
    is forgotten."""
    key = DELIVERIES_KEY.format(token=token)
    pipe = client.pipeline()
    pipe.smembers(key)
    pipe.delete(key)
    members, _ = pipe.execute()
    return sorted(_text(m) for m in members)


def stray_deliveries(client: redis.Redis, living: Sequence[str], *, before: float
                     ) -> list[str]:
    """The messages delivered before ``before`` (epoch seconds) and not yet acknowledged
    that none of the ``living`` processes noted receiving."""
    found = cast("list[bytes]", client.zrangebyscore(UNACKED_INDEX_KEY, "-inf", before))
    old = [_text(tag) for tag in found]
    if not old:
        return []
    pipe = client.pipeline(transaction=False)
    for token in living:
        pipe.smembers(DELIVERIES_KEY.format(token=token))
    received = {_text(tag) for tags in pipe.execute() for tag in tags}
    return [tag for tag in old if tag not in received]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def restorer(settings: Settings, connection: Callable[[], Any]) -> Restorer:
    """A :data:`Restorer` that puts unacknowledged messages back on their queues with
    kombu's own restore (what its visibility timeout does, an hour later): those the dead
    processes received, and the stray ones, delivered over a holder timeout ago to no
    living process."""

    def restore(dead: Sequence[str], living: Sequence[str]) -> int:
        client = redis_client(settings.effective_broker_url)
        candidates = {tag for token in dead for tag in deliveries_of(client, token)}
        candidates.update(stray_deliveries(
            client, living, before=time.time() - settings.holder_timeout_seconds))
        tags = [tag for tag in sorted(candidates) if client.hexists(UNACKED_KEY, tag)]
        if not tags:
            return 0
        with connection() as conn:
            qos = conn.default_channel.qos
            for tag in tags:
                qos.restore_by_tag(tag)
        return len(tags)

    return restore
