"""Worker heartbeats on SQLite and PostgreSQL: the holder table, claims that name their
holder, and leases a live holder renews."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.support.db import new_run, race
from workers.db import repository as repo
from workers.db.models import Attempt, AttemptOutcome, Item, ItemStatus, WorkerProcess, utcnow
from workers.db.session import session_scope
from workers.process import holding
from workers.runtime import heartbeat
from workers.settings import get_settings


def item_row(item_id: int) -> Item:
    with session_scope() as s:
        item = s.get(Item, item_id)
        assert item is not None
        s.expunge(item)
        return item


class TestHolderRows:
    def test_a_beat_writes_the_row_once_then_moves_its_time(self, migrated_db: str) -> None:
        with session_scope() as s:
            assert repo.beat(s, "host:1:aa", host="host", pid=1) is True
        with session_scope() as s:
            first = s.scalars(select(WorkerProcess)).one().beat_at
            assert repo.beat(s, "host:1:aa", host="host", pid=1) is False
        with session_scope() as s:
            row = s.scalars(select(WorkerProcess)).one()
            assert (row.id, row.host, row.pid) == ("host:1:aa", "host", 1)
            assert row.beat_at >= first
            assert [w.id for w in repo.live_workers(s, utcnow() - timedelta(seconds=60))] == \
                ["host:1:aa"]
            assert repo.live_workers(s, utcnow() + timedelta(seconds=1)) == []
            repo.forget_workers(s, ["host:1:aa"])
        with session_scope() as s:
            assert repo.worker_count(s, utcnow() - timedelta(seconds=60)) == 0

    def test_every_claim_names_its_holder(self, migrated_db: str) -> None:
        _, (one, *group) = new_run(["alone", "first of a group", "second of a group"])
        with session_scope() as s:
            assert repo.claim_item(s, one, lease_seconds=60, holder="host:1:aa") is not None
            assert set(repo.claim_items(s, group, lease_seconds=60, holder="host:2:bb")) == \
                set(group)
        assert item_row(one).holder == "host:1:aa"
        assert {item_row(i).holder for i in group} == {"host:2:bb"}

    def test_a_holder_renews_only_the_leases_of_its_own_running_claims(
            self, migrated_db: str) -> None:
        _, (mine, theirs, done) = new_run(["mine", "theirs", "done"])
        with session_scope() as s:
            for item_id, holder in ((mine, "me"), (theirs, "other"), (done, "me")):
                claimed = repo.claim_item(s, item_id, lease_seconds=1, holder=holder)
                assert claimed is not None
            repo.save_result(s, repo.load_items(s, Item.id == done)[done], output={},
                             model="m", response_id=None)
        before = {i: item_row(i).lease_expires_at for i in (mine, theirs)}
        with session_scope() as s:
            assert repo.renew_leases(s, [mine, theirs, done], holder="me",
                                     lease_seconds=600) == 1
        assert item_row(mine).lease_expires_at > before[mine] + timedelta(seconds=500)
        assert item_row(theirs).lease_expires_at == before[theirs]
        assert item_row(done).lease_expires_at is None


class TestHeartbeat:
    def test_a_beat_renews_the_leases_of_the_items_this_process_holds(
            self, migrated_db: str, configure: Any) -> None:
        configure(lease_seconds=600)
        _, (held, dropped) = new_run(["held while its call runs", "no longer held"])
        token = holding.token()
        with session_scope() as s:
            for item_id in (held, dropped):
                assert repo.claim_item(s, item_id, lease_seconds=1, holder=token) is not None
        beat = heartbeat.Heartbeat(get_settings())
        with holding.holding([held]):
            assert holding.held() == [held]
            assert beat.beat()
        assert holding.held() == []
        assert item_row(held).lease_expires_at > utcnow() + timedelta(seconds=500)
        assert item_row(dropped).lease_expires_at < utcnow() + timedelta(seconds=2)
        with session_scope() as s:
            (row,) = repo.live_workers(s, utcnow() - timedelta(seconds=60))
        assert row.id == token and beat.beats == 1
        beat.stop()  # a clean end removes the row
        with session_scope() as s:
            assert repo.live_workers(s, utcnow() - timedelta(seconds=60)) == []

    def test_a_database_outage_is_logged_once_and_beats_resume(
            self, migrated_db: str, configure: Any, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="docpipe.worker")
        beat = heartbeat.Heartbeat(get_settings())
        configure(database_url="postgresql+psycopg://nobody:x@127.0.0.1:1/none")
        assert not beat.beat() and not beat.beat()
        assert sum("worker heartbeat failed" in r.message for r in caplog.records) == 1
        (line,) = [r.getMessage() for r in caplog.records if "heartbeat failed" in r.message]
        assert ("the database postgresql+psycopg://nobody:***@127.0.0.1:1/none could not be "
                "reached (OperationalError" in line), line
        assert "tries again every" in line and ":x@" not in line
        configure(database_url=migrated_db)
        assert beat.beat() and beat.beats == 1
        assert any("worker heartbeat is back" in r.message for r in caplog.records)


class Published:
    """A ``publish`` that records what it was given, as the tasks' ``send_items`` is called."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[int]]] = []

    def __call__(self, item_ids: list[int], *, queue: str) -> None:
        self.sent.append((queue, list(item_ids)))

    @property
    def ids(self) -> list[int]:
        return sorted(i for _, ids in self.sent for i in ids)


def holder_row(token: str, *, beat_seconds_ago: float) -> None:
    with session_scope() as s:
        repo.beat(s, token, host="host", pid=1)
        s.execute(update(WorkerProcess).where(WorkerProcess.id == token).values(
            beat_at=utcnow() - timedelta(seconds=beat_seconds_ago)))


def claimed_by(item_id: int, holder: str, *, seconds_ago: float = 0) -> int:
    """Claim the item for ``holder`` with a call in flight; return the attempt id."""
    with session_scope() as s:
        item = repo.claim_item(s, item_id, lease_seconds=600, holder=holder)
        assert item is not None
        attempt = repo.begin_attempt(s, item_id=item_id, run_id=item.run_id,
                                     model="gpt-4.1-mini", worker=holder)
        s.execute(update(Item).where(Item.id == item_id).values(
            updated_at=utcnow() - timedelta(seconds=seconds_ago)))
    return attempt


class TestSweep:
    def test_a_dead_holders_claims_are_voided_counted_and_sent_again_at_once(
            self, migrated_db: str) -> None:
        _, (dead_one, alive_one, orphan, new_orphan) = new_run(
            ["held by a dead worker", "held by a live one", "holder died before its first beat",
             "holder has not beaten yet"])
        holder_row("dead", beat_seconds_ago=31)
        holder_row("alive", beat_seconds_ago=2)
        lost_call = claimed_by(dead_one, "dead")
        claimed_by(alive_one, "alive")
        claimed_by(orphan, "gone", seconds_ago=31)
        claimed_by(new_orphan, "starting", seconds_ago=1)
        published = Published()

        swept = heartbeat.sweep(get_settings(), publish=published)

        assert swept.dead == ("dead",) and swept.sent == 2
        assert published.sent == [("docpipe.live", sorted([dead_one, orphan]))]
        for item_id in (dead_one, orphan):
            item = item_row(item_id)
            assert (item.status, item.worker_losses, item.lease_expires_at) == (
                ItemStatus.QUEUED, 1, None)
        for item_id in (alive_one, new_orphan):
            assert item_row(item_id).status == ItemStatus.RUNNING
        with session_scope() as s:
            assert s.get(Attempt, lost_call).outcome == AttemptOutcome.LOST  # type: ignore[union-attr]
            assert {w.id for w in s.scalars(select(WorkerProcess))} == {"alive"}
        # Nothing left to do: a second sweep finds nobody.
        assert heartbeat.sweep(get_settings(), publish=published) == heartbeat.Swept()

    def test_sweeps_racing_void_each_claim_once(self, migrated_db: str) -> None:
        _, ids = new_run([f"held by a dead worker {i}" for i in range(12)])
        holder_row("dead", beat_seconds_ago=60)
        for item_id in ids:
            claimed_by(item_id, "dead")
        published = Published()
        race(4, lambda: heartbeat.sweep(get_settings(), publish=published))
        assert published.ids == sorted(ids)
        assert {item_row(i).worker_losses for i in ids} == {1}

    def test_a_process_judges_others_only_after_a_whole_timeout_of_its_own_beats(
            self, migrated_db: str, configure: Any) -> None:
        configure(heartbeat_seconds=1, holder_timeout_seconds=3, db_idle_transaction_seconds=2)
        _, (item_id,) = new_run(["held by a dead worker"])
        holder_row("dead", beat_seconds_ago=60)
        claimed_by(item_id, "dead")
        published = Published()
        beat = heartbeat.Heartbeat(get_settings(), publish=published)
        assert beat.beat() and published.sent == []  # just up (or back): not yet
        assert not heartbeat.may_sweep(beat.up_since, beat.up_since + 2.9, 3)  # type: ignore[operator]
        assert heartbeat.may_sweep(beat.up_since, beat.up_since + 3, 3)  # type: ignore[operator]
        # A gap in its own beats (it was stopped, or the database was away) starts again.
        assert heartbeat.is_gap(10.0, 12.6, 1) and not heartbeat.is_gap(10.0, 12.4, 1)
        beat.up_since -= 3  # type: ignore[operator]
        assert beat.beat() and published.ids == [item_id]
        beat.stop()


def test_a_consumer_keeps_only_its_unacknowledged_deliveries(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    token = f"host:1:{uuid.uuid4().hex[:8]}"
    for tag in ("tag-acked", "tag-held"):
        heartbeat.record_delivery(client, token, tag, ttl_seconds=60)
    client.hset(heartbeat.UNACKED_KEY, "tag-held", "{}")  # kombu still holds this one
    try:
        heartbeat.prune_deliveries(client, token)
        assert heartbeat.deliveries_of(client, token) == ["tag-held"]
        assert heartbeat.deliveries_of(client, token) == []  # read once, then forgotten
    finally:
        client.hdel(heartbeat.UNACKED_KEY, "tag-held")


def test_a_delivery_whose_ack_was_lost_is_no_longer_claimed_by_its_consumer(
        broker_url: str) -> None:
    # Celery acknowledged the message while Redis was restarting: it logged the failure and
    # moved on, and the AOF kept the delivery in kombu's unacked hash. The consumer is done
    # with it, so it stops claiming it, and the sweep's stray rule can put it back.
    class Request:
        acknowledged = False

    client = redis.Redis.from_url(broker_url)
    token = f"host:1:{uuid.uuid4().hex[:8]}"
    done, waiting = Request(), Request()
    done.acknowledged = True
    received = heartbeat.Received()
    for tag, request in (("tag-ack-lost", done), ("tag-prefetched", waiting)):
        heartbeat.record_delivery(client, token, tag, ttl_seconds=60)
        received.note(tag, request)
        client.hset(heartbeat.UNACKED_KEY, tag, "{}")
    try:
        assert received.settled() == ["tag-ack-lost"]
        heartbeat.prune_deliveries(client, token, settled=received.settled())
        received.forget(["tag-ack-lost"])
        assert received.settled() == []
        assert heartbeat.deliveries_of(client, token) == ["tag-prefetched"]
    finally:
        client.hdel(heartbeat.UNACKED_KEY, "tag-ack-lost", "tag-prefetched")


@pytest.mark.postgres
def test_a_transaction_left_idle_is_ended_by_postgresql(postgres_url: str,
                                                         configure: Any) -> None:
    # A stopped worker must not hold its locks until it wakes up: PostgreSQL ends its
    # session once it has sat idle inside a transaction for db_idle_transaction_seconds.
    from workers.db.migrations import upgrade
    from workers.db.session import dispose_engines, get_engine

    upgrade(postgres_url)
    configure(database_url=postgres_url, db_idle_transaction_seconds=1)
    dispose_engines()
    with get_engine().connect() as conn:
        assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "1s"
        conn.exec_driver_sql("SELECT 1")  # the transaction begins, and sits idle
        time.sleep(2.5)
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="idle-in-transaction timeout"):
            conn.exec_driver_sql("SELECT 1")


@pytest.mark.postgres
def test_the_sessions_of_a_holder_found_dead_are_ended(postgres_url: str,
                                                        configure: Any) -> None:
    from workers.db.migrations import upgrade
    from workers.db.session import application_name, get_engine

    upgrade(postgres_url)
    configure(database_url=postgres_url)
    name = application_name("host:4242:deadbeef")
    stopped = sqlalchemy.create_engine(postgres_url,
                                       connect_args={"application_name": name})
    with stopped.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # a transaction left open, as a stopped process's
        with get_engine().connect() as other, other.begin():
            ended = repo.end_sessions(Session(bind=other), [name, "docpipe nobody"])
        assert ended == 1
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            conn.exec_driver_sql("SELECT 1")
    stopped.dispose()


@pytest.mark.postgres
def test_a_renewal_skips_the_rows_a_writer_holds_instead_of_waiting(postgres_url: str,
                                                                    configure: Any) -> None:
    # A writer locks its items in id order while it writes their answers. A renewal that
    # waited for them, in whatever order its rows came, deadlocked with it (34 answers of a
    # fault-free 20,000-document soak were lost that way); it takes what is free instead.
    from workers.db.migrations import upgrade

    upgrade(postgres_url)
    configure(database_url=postgres_url, db_idle_transaction_seconds=5)
    _, (written, free) = new_run(["being written", "free"])
    with session_scope() as s:
        for item_id in (written, free):
            assert repo.claim_item(s, item_id, lease_seconds=1, holder="me") is not None
    with session_scope() as writer:
        assert repo.taken_over(writer, [written], holder="me") == set()  # locks its row
        started = time.monotonic()
        with session_scope() as s:
            assert repo.renew_leases(s, [written, free], holder="me", lease_seconds=600) == 1
        assert time.monotonic() - started < 2, "the renewal waited for the writer's lock"
    assert item_row(free).lease_expires_at > utcnow() + timedelta(seconds=500)
    assert item_row(written).lease_expires_at < utcnow() + timedelta(seconds=2)


def test_a_stray_delivery_goes_back_on_its_queue(broker_url: str, configure: Any) -> None:
    # Delivered and never acknowledged, and no living process noted receiving it: its
    # consumer died before it could, or a Redis restart kept the delivery. It must not wait
    # out the visibility timeout (an hour by default).
    from kombu import Connection

    configure(broker_url=broker_url, holder_timeout_seconds=30)
    queue = f"test.stray.{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(broker_url)
    living = f"host:1:{uuid.uuid4().hex[:8]}"
    # The consumer's connection stays open: closed, kombu would put its deliveries back.
    consumer = Connection(broker_url)
    tags: dict[str, str] = {}
    try:
        producer = consumer.Producer()
        for body in ("stray", "noted by a living consumer", "just delivered"):
            producer.publish(body, routing_key=queue,
                             declare=[consumer.SimpleQueue(queue).queue])
        for _ in range(3):
            message = consumer.default_channel.basic_get(queue, no_ack=False)
            assert message is not None
            tags[message.payload] = message.delivery_tag
        long_ago = time.time() - 31
        for body in ("stray", "noted by a living consumer"):
            client.zadd(heartbeat.UNACKED_INDEX_KEY, {tags[body]: long_ago})
        heartbeat.record_delivery(client, living, tags["noted by a living consumer"],
                                  ttl_seconds=60)
        assert heartbeat.stray_deliveries(client, [living], before=time.time() - 30) == \
            [tags["stray"]]

        restore = heartbeat.restorer(get_settings(), lambda: Connection(broker_url))
        assert restore([], [living]) == 1
        assert client.llen(queue) == 1
        assert not client.hexists(heartbeat.UNACKED_KEY, tags["stray"])
        assert client.hexists(heartbeat.UNACKED_KEY, tags["just delivered"])
        assert restore([], [living]) == 0, "put back once"
    finally:
        for tag in tags.values():
            client.hdel(heartbeat.UNACKED_KEY, tag)
            client.zrem(heartbeat.UNACKED_INDEX_KEY, tag)
        consumer.release()
        client.delete(queue, heartbeat.DELIVERIES_KEY.format(token=living))
