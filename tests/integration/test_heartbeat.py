"""Worker heartbeats on SQLite and PostgreSQL: the holder table, claims that name their
holder, and leases a live holder renews."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.db import new_run
from workers.db import repository as repo
from workers.db.models import Item, WorkerProcess, utcnow
from workers.db.session import session_scope
from workers.runtime import heartbeat, holding
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
        configure(database_url=migrated_db)
        assert beat.beat() and beat.beats == 1
        assert any("worker heartbeat is back" in r.message for r in caplog.records)
