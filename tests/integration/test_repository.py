"""The repository on SQLite and PostgreSQL: writes that must happen once, happen once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from tests.support.db import new_run, race
from workers.db import repository as repo
from workers.db.models import (
    Attempt,
    AttemptOutcome,
    Item,
    ItemStatus,
    Result,
    Run,
    RunStatus,
    utcnow,
)
from workers.db.session import session_scope


class TestIngestRows:
    def test_same_content_is_one_document_and_one_item_per_run(self, migrated_db: str) -> None:
        run_id, items = new_run(["alpha", "beta", "alpha"])
        assert len(items) == 2
        with session_scope() as s:
            report = repo.run_report(s, run_id)
        assert report is not None and report.total == 2 and report.status == RunStatus.RUNNING

    def test_unreadable_sources_are_failed_items_with_reasons(self, migrated_db: str) -> None:
        run_id, _ = new_run(["alpha"])
        with session_scope() as s:
            repo.add_failed_items(s, run_id, [("bad.pdf", "encrypted_pdf", "needs a password")])
        with session_scope() as s:
            rows = list(repo.iter_item_results(s, run_id))
        bad = [r for r in rows if r.source == "bad.pdf"][0]
        assert (bad.status, bad.error_code, bad.error_message) == (
            "failed", "encrypted_pdf", "needs a password")


class TestClaim:
    def test_exactly_one_of_many_racing_workers_claims_an_item(self, migrated_db: str) -> None:
        _, (item_id,) = new_run(["only one"])

        def claim() -> repo.ClaimedItem | None:
            with session_scope() as s:
                return repo.claim_item(s, item_id, lease_seconds=60, holder="test")

        claims = [c for c in race(8, claim) if c is not None]
        assert len(claims) == 1 and claims[0].attempts == 1 and claims[0].text == "only one"

    def test_items_of_a_paused_run_are_not_claimed(self, migrated_db: str) -> None:
        run_id, (item_id,) = new_run(["paused"])
        with session_scope() as s:
            repo.pause_run(s, run_id, "quota")
        with session_scope() as s:
            assert repo.claim_item(s, item_id, lease_seconds=60, holder="test") is None
            repo.resume_run(s, run_id)
        with session_scope() as s:
            assert repo.claim_item(s, item_id, lease_seconds=60, holder="test") is not None


    def test_a_group_claim_takes_each_waiting_item_once_and_leaves_suspects(
            self, migrated_db: str) -> None:
        _, ids = new_run([f"group {i}" for i in range(6)])
        with session_scope() as s:
            s.execute(update(Item).where(Item.id == ids[1]).values(worker_losses=1))
            held = repo.claim_item(s, ids[4], lease_seconds=60, holder="test")
        assert held is not None

        def claim() -> dict[int, repo.ClaimedItem]:
            with session_scope() as s:
                return repo.claim_items(s, ids, lease_seconds=60, holder="test")

        claims = race(4, claim)
        taken = [item_id for c in claims for item_id in c]
        assert sorted(taken) == [ids[0], ids[2], ids[3], ids[5]], "each once; no suspect"
        assert all(c.attempts == 1 for claim_ in claims for c in claim_.values())
        with session_scope() as s:
            assert repo.suspects_among(s, ids) == [ids[1]]
            assert repo.claim_items(s, [], lease_seconds=60, holder="test") == {}

    def test_only_items_on_their_last_chance_are_left_to_run_alone(
            self, migrated_db: str) -> None:
        # With three losses to quarantine, an item lost once goes in a group; an item lost
        # twice, or lost once and now over an expired lease, is claimed only alone.
        _, (once, twice, expired_once, expired_never) = new_run(
            ["lost once", "lost twice", "lost once, lease expired", "lease expired"])
        with session_scope() as s:
            s.execute(update(Item).where(Item.id == once).values(worker_losses=1))
            s.execute(update(Item).where(Item.id == twice).values(worker_losses=2))
            for item_id in (expired_once, expired_never):
                assert repo.claim_item(s, item_id, lease_seconds=0, holder="dead") is not None
            s.execute(update(Item).where(Item.id == expired_once).values(worker_losses=1))
        ids = [once, twice, expired_once, expired_never]
        with session_scope() as s:
            assert set(repo.claim_items(s, ids, lease_seconds=60, holder="group",
                                        alone_from=2)) == {once}
            assert repo.suspects_among(s, ids, alone_from=2) == [twice, expired_once,
                                                                  expired_never]
        with session_scope() as s:
            for item_id in (twice, expired_once):
                assert repo.claim_item(s, item_id, lease_seconds=60, holder="alone",
                                       alone_from=2) is None
            # Its first loss, counted by this claim: not yet its last chance.
            taken = repo.claim_item(s, expired_never, lease_seconds=60, holder="alone",
                                    alone_from=2)
        assert taken is not None and taken.worker_losses == 1
        with session_scope() as s:  # under the process's lock, without the condition
            alone = repo.claim_item(s, twice, lease_seconds=60, holder="alone")
        assert alone is not None and alone.worker_losses == 2

    def test_a_group_claim_of_an_item_lost_once_closes_the_lost_call(
            self, migrated_db: str) -> None:
        # The reconciler sends again an item whose lease expired with its call in flight: the
        # group that claims it next records that call lost, as a claim alone would.
        _, item_id, attempt_id = call_in_flight("lost with its call", lease_seconds=0)
        with session_scope() as s:
            repo.mark_requeued(s, [item_id])
        with session_scope() as s:
            claimed = repo.claim_items(s, [item_id], lease_seconds=60, holder="group",
                                       alone_from=2)
        assert claimed[item_id].worker_losses == 1
        with session_scope() as s:
            lost = s.get(Attempt, attempt_id)
            assert lost is not None and lost.outcome == AttemptOutcome.LOST
            assert lost.error_code == "worker_lost"

    def test_group_attempt_rows_come_back_in_order_and_a_never_sent_one_goes(
            self, migrated_db: str) -> None:
        run_id, ids = new_run(["one", "two", "three"])
        with session_scope() as s:
            rows = repo.begin_attempts(s, [repo.NewAttempt(i, run_id, "gpt-4.1-mini")
                                           for i in ids], worker="w@h")
        with session_scope() as s:
            attempts = {a.id: a for a in s.scalars(select(Attempt))}
            assert [attempts[r].item_id for r in rows] == ids
            assert {a.outcome for a in attempts.values()} == {AttemptOutcome.IN_FLIGHT}
            repo.drop_attempt(s, rows[1])
        with session_scope() as s:
            assert sorted(s.scalars(select(Attempt.item_id))) == [ids[0], ids[2]]


class TestResults:
    def test_racing_writers_make_one_result_and_both_items_point_at_it(self, migrated_db: str
                                                                      ) -> None:
        _, (first,) = new_run(["shared text"])
        _, (second,) = new_run(["shared text"])
        claimed = []
        for item_id in (first, second):
            with session_scope() as s:
                item = repo.claim_item(s, item_id, lease_seconds=60, holder="test")
                assert item is not None
                claimed.append(item)

        def save(index: int) -> int:
            with session_scope() as s:
                return repo.save_result(s, claimed[index], output={"n": index},
                                        model="gpt-4.1-mini", response_id=f"resp_{index}")

        with ThreadPoolExecutor(2) as pool:
            result_ids = list(pool.map(save, (0, 1)))
        assert result_ids[0] == result_ids[1]
        with session_scope() as s:
            assert s.scalar(select(func.count()).select_from(Result)) == 1
            statuses = s.scalars(select(Item.status).where(Item.id.in_([first, second])))
            assert set(statuses) == {ItemStatus.SUCCEEDED}

    def test_a_group_of_successes_is_written_as_one_at_a_time_would_be(
            self, migrated_db: str) -> None:
        # Four answers: two plain, one whose row was closed as lost meanwhile (its lease ran
        # out, the answer came after all), one whose result a racing writer stored first.
        run_id, ids = new_run(["g-one", "g-two", "g-lost", "g-raced"], version="vg")
        _, (other,) = new_run(["g-raced"], version="vg")
        with session_scope() as s:
            s.execute(update(Run).where(Run.id == run_id).values(budget_usd=Decimal(1)))
        with session_scope() as s:
            items = repo.claim_items(s, [*ids, other], lease_seconds=60, holder="test")
            rows = {i: repo.begin_attempt(s, item_id=i, run_id=run_id, model="gpt-4.1-mini",
                                          worker="w", reserve_usd=Decimal("0.01"))
                    for i in ids}
        with session_scope() as s:
            repo.close_lost_attempts(s, ids[2])
            raced = repo.save_result(s, items[other], output={"by": "racer"},
                                     model="gpt-4.1-mini", response_id="resp_r")
        now = utcnow()
        with session_scope() as s:
            written = repo.record_successes(s, [
                repo.Success(items[i], repo.AttemptRecord(
                    item_id=i, run_id=run_id, model="gpt-4.1-mini", outcome=AttemptOutcome.OK,
                    started_at=now, latency_ms=5, cost_usd=Decimal("0.001"),
                    reserved_usd=Decimal("0.01"), id=rows[i]),
                    {"n": i}, f"resp_{i}", waited_ms=7 if i == ids[0] else 0)
                for i in ids])
        assert written[ids[3]] == raced and len(set(written.values())) == 4
        with session_scope() as s:
            for i in ids:
                item = s.get(Item, i)
                assert item is not None and item.status == ItemStatus.SUCCEEDED
                assert item.result_id == written[i] and item.calls == 1
                assert item.cost_usd == Decimal("0.001")
            assert s.get(Item, ids[0]).budget_wait_ms == 7  # type: ignore[union-attr]
            assert {a.outcome for a in s.scalars(select(Attempt).where(
                Attempt.run_id == run_id))} == {AttemptOutcome.OK}
            run = s.get(Run, run_id)
            assert run is not None and run.reserved_usd == 0
            # Three calls cost what they cost; the lost one was counted at its worst case
            # when closed, and is now replaced by its real cost.
            assert run.spent_usd == Decimal("0.004")
            assert s.scalar(select(func.count()).select_from(Result)
                            .where(Result.pipeline_version == "vg")) == 4

    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=8))
    def test_saving_any_sequence_of_results_is_idempotent(self, migrated_db: str,
                                                          texts: list[str]) -> None:
        version = f"v-{len(texts)}-{'-'.join(texts)}"
        _, items = new_run(sorted(set(texts)), version=version)
        for item_id in items * 2:
            with session_scope() as s:
                # The lease expires at once.
                item = repo.claim_item(s, item_id, lease_seconds=0, holder="test")
                if item is not None:
                    repo.save_result(s, item, output={}, model="m", response_id=None)
        with session_scope() as s:
            count = s.scalar(select(func.count()).select_from(Result)
                             .where(Result.pipeline_version == version))
        assert count == len(set(texts))


class TestReplay:
    def test_concurrent_replays_reset_each_failed_item_once(self, migrated_db: str) -> None:
        run_id, items = new_run([f"doc {i}" for i in range(30)])
        with session_scope() as s:
            for item_id in items:
                repo.fail_item(s, item_id, error_class="transient", code="connection_error",
                               message="down")
            repo.finish_run_if_done(s, run_id)

        def replay() -> list[int]:
            with session_scope() as s:
                return repo.replay_items(s, run_id, [ItemStatus.FAILED])

        batches = race(4, replay)
        replayed = [i for batch in batches for i in batch]
        assert sorted(replayed) == sorted(items)
        with session_scope() as s:
            run = repo.get_run(s, run_id)
            assert run is not None and run.status == RunStatus.RUNNING

    def test_finish_waits_for_every_item(self, migrated_db: str) -> None:
        run_id, (a, b) = new_run(["x", "y"])
        with session_scope() as s:
            repo.fail_item(s, a, error_class="permanent", code="http_400", message="bad")
            assert not repo.finish_run_if_done(s, run_id)
            repo.fail_item(s, b, error_class="permanent", code="http_400", message="bad")
            assert repo.finish_run_if_done(s, run_id)
        with session_scope() as s:
            report = repo.run_report(s, run_id)
        assert report is not None and report.status == "finished" and report.failed == 2
        assert report.errors == {"permanent:http_400": 2}


class TestWaiting:
    def test_a_parked_item_keeps_its_attempt_and_is_due_when_its_wait_ends(
            self, migrated_db: str) -> None:
        _, (with_message, without) = new_run(["sent", "kept"])
        now = utcnow()
        with session_scope() as s:
            for item_id in (with_message, without):
                assert repo.claim_item(s, item_id, lease_seconds=60, holder="test") is not None
            repo.park_item(s, with_message, not_before=now - timedelta(seconds=1),
                           waited_ms=1000, message_sent=True)
            repo.park_item(s, without, not_before=now - timedelta(seconds=1), waited_ms=500,
                           message_sent=False)
        with session_scope() as s:
            rows = {i.id: i for i in s.scalars(select(Item))}
            # The countdown message may still come: the sweep gives it a grace period. The item
            # parked without one is due as soon as its wait is over.
            due = repo.items_to_requeue(s, due_before=now - timedelta(seconds=30))
        assert due == {"docpipe.live": [without]}
        assert rows[with_message].attempts == rows[without].attempts == 0
        assert (rows[with_message].budget_wait_ms, rows[without].budget_wait_ms) == (1000, 500)

    def test_rate_limited_attempts_are_counted_apart(self, migrated_db: str) -> None:
        run_id, (item_id,) = new_run(["limited"])
        with session_scope() as s:
            claimed = repo.claim_item(s, item_id, lease_seconds=60, holder="test")
            assert claimed is not None
            for outcome in ("rate_limited", "rate_limited", "transient"):
                repo.record_attempt(s, repo.AttemptRecord(
                    item_id=item_id, run_id=run_id, model="gpt-4.1-mini", outcome=outcome,
                    started_at=utcnow(), latency_ms=5))
        with session_scope() as s:
            assert repo.count_attempts(s, item_id) == 3
            assert repo.count_attempts(s, item_id, outcome="rate_limited") == 2
            report = repo.run_report(s, run_id)
        assert report is not None
        assert report.attempts_by_outcome == {"rate_limited": 2, "transient": 1}
        assert report.last_minute_requests == 3

    def test_a_claim_over_an_expired_lease_counts_a_lost_worker(self, migrated_db: str) -> None:
        _, (item_id,) = new_run(["lost"])
        with session_scope() as s:
            assert repo.suspected_losses(s, item_id) == 0
            assert repo.claim_item(s, item_id, lease_seconds=0, holder="test") is not None
        with session_scope() as s:
            # Its worker died holding it: the lease ran out with the item still running.
            assert repo.suspected_losses(s, item_id) == 1
            again = repo.claim_item(s, item_id, lease_seconds=60, holder="test")
        assert again is not None and again.worker_losses == 1 and again.attempts == 2
        with session_scope() as s:
            assert repo.suspected_losses(s, item_id) == 1  # held, lease valid: no new loss


def call_in_flight(text: str, *, lease_seconds: int) -> tuple[int, int, int]:
    """A new item, claimed, with a call begun: (run id, item id, attempt id)."""
    run_id, (item_id,) = new_run([text])
    with session_scope() as s:
        assert repo.claim_item(s, item_id, lease_seconds=lease_seconds, holder="test") is not None
        attempt_id = repo.begin_attempt(s, item_id=item_id, run_id=run_id,
                                        model="gpt-4.1-mini", worker="host:1")
    return run_id, item_id, attempt_id


class TestRunReport:
    def test_the_report_adds_up_on_both_databases(self, migrated_db: str) -> None:
        # Ten items: item i pays i cents over one call, or two for the even ones (the first a
        # 429 at no cost); one failed item; the rest are queued.
        run_id, items = new_run([f"report {i}" for i in range(12)])
        started = utcnow()
        with session_scope() as s:
            for i, item_id in enumerate(items[:10], start=1):
                assert repo.claim_item(s, item_id, lease_seconds=60, holder="test") is not None
                if i % 2 == 0:
                    repo.record_attempt(s, repo.AttemptRecord(
                        item_id=item_id, run_id=run_id, model="m", outcome="rate_limited",
                        started_at=started - timedelta(minutes=5), latency_ms=3))
                repo.record_attempt(s, repo.AttemptRecord(
                    item_id=item_id, run_id=run_id, model="m", outcome="ok",
                    started_at=started, latency_ms=40, input_tokens=100 * i, cached_tokens=i,
                    output_tokens=10 * i, reasoning_tokens=1, cost_usd=Decimal(i) / 100))
                repo.add_budget_wait(s, item_id, 250)
            repo.fail_item(s, items[10], error_class="bad_output", code="schema_violation",
                           message="no")
        with session_scope() as s:
            report = repo.run_report(s, run_id)
        assert report is not None
        assert report.total == 12 and report.attempts == 15
        assert report.attempts_by_outcome == {"ok": 10, "rate_limited": 5}
        assert report.rate_limited == 5
        assert (report.input_tokens, report.cached_tokens, report.output_tokens,
                report.reasoning_tokens) == (5500, 55, 550, 10)
        assert report.cost_usd == Decimal("0.55")
        # Nearest rank over 0.01 .. 0.10: the 5th and the 9th.
        assert report.cost_per_item == {"p50": 0.05, "p90": 0.09, "max": 0.10}
        # 0.055 a called item, for the 11 items still open (10 running, 1 queued).
        assert report.projected_cost_usd == Decimal("0.55") + Decimal("0.055") * 11
        assert report.budget_wait_seconds == 2.5
        assert report.last_minute_requests == 10 and report.last_minute_tokens == 6050
        assert report.errors == {"bad_output:schema_violation": 1}
        assert report.by_status[ItemStatus.FAILED] == 1

    def test_a_run_without_calls_has_no_costs(self, migrated_db: str) -> None:
        run_id, _ = new_run(["quiet"])
        with session_scope() as s:
            report = repo.run_report(s, run_id)
        assert report is not None
        assert (report.attempts, report.cost_usd, report.cost_per_item) == (0, 0, {})
        assert report.projected_cost_usd == 0


class TestAttemptsInFlight:
    def test_a_call_is_on_record_before_it_is_made_and_completed_after(
            self, migrated_db: str) -> None:
        run_id, item_id, attempt_id = call_in_flight("in flight", lease_seconds=60)
        with session_scope() as s:
            row = s.get(Attempt, attempt_id)
            assert row is not None and row.outcome == AttemptOutcome.IN_FLIGHT
            repo.record_attempt(s, repo.AttemptRecord(
                id=attempt_id, item_id=item_id, run_id=run_id, model="gpt-4.1-mini",
                outcome=AttemptOutcome.OK, started_at=utcnow(), latency_ms=12, input_tokens=7,
                worker="host:1"))
        with session_scope() as s:
            rows = s.scalars(select(Attempt).where(Attempt.item_id == item_id)).all()
            assert [(r.id, r.outcome, r.input_tokens) for r in rows] == \
                [(attempt_id, AttemptOutcome.OK, 7)]

    def test_the_next_claim_marks_a_dead_holders_call_lost(self, migrated_db: str) -> None:
        _, item_id, lost_id = call_in_flight("dead holder", lease_seconds=0)
        with session_scope() as s:
            assert repo.claim_item(s, item_id, lease_seconds=60, holder="test") is not None
        with session_scope() as s:
            row = s.get(Attempt, lost_id)
            assert row is not None and row.outcome == AttemptOutcome.LOST
            assert row.error_code == "worker_lost" and row.error_message == repo.LOST_MESSAGE
            assert repo.last_lost_attempt(s, item_id) == ("worker_lost", repo.LOST_MESSAGE)

    def test_a_reason_recorded_by_the_dying_process_is_kept(self, migrated_db: str) -> None:
        _, item_id, attempt_id = call_in_flight("memory hog", lease_seconds=0)
        with session_scope() as s:
            assert repo.close_lost_attempts(s, item_id, attempt_id=attempt_id,
                                            code="memory_limit", message="past 400 MB") == 1
        with session_scope() as s:
            assert repo.claim_item(s, item_id, lease_seconds=60, holder="test") is not None
            assert repo.last_lost_attempt(s, item_id) == ("memory_limit", "past 400 MB")


class TestBudget:
    def budgeted_run(self, budget: str, count: int) -> tuple[int, list[int]]:
        run_id, items = new_run([f"budgeted {i}" for i in range(count)])
        with session_scope() as s:
            s.execute(update(Run).where(Run.id == run_id).values(budget_usd=Decimal(budget)))
        return run_id, items

    def begin(self, run_id: int, item_id: int, reserve: str) -> int | None:
        with session_scope() as s:
            return repo.begin_attempt(s, item_id=item_id, run_id=run_id, model="gpt-4.1-mini",
                                      worker="host:1", reserve_usd=Decimal(reserve))

    def test_racing_workers_never_hold_more_than_the_budget(self, migrated_db: str) -> None:
        run_id, items = self.budgeted_run("0.30", 12)
        lanes = iter(items)
        lock = threading.Lock()

        def take() -> int | None:
            with lock:
                item_id = next(lanes)
            return self.begin(run_id, item_id, "0.10")

        begun = race(12, take)
        assert sum(a is not None for a in begun) == 3
        with session_scope() as s:
            run = s.get(Run, run_id)
            assert run is not None and run.reserved_usd == Decimal("0.30")

    def test_a_finished_call_turns_its_reservation_into_its_cost(self, migrated_db: str
                                                                 ) -> None:
        run_id, (first, second) = self.budgeted_run("1.00", 2)
        done = self.begin(run_id, first, "0.40")
        lost = self.begin(run_id, second, "0.40")
        assert done is not None and lost is not None
        with session_scope() as s:
            repo.record_attempt(s, repo.AttemptRecord(
                id=done, item_id=first, run_id=run_id, model="gpt-4.1-mini",
                outcome=AttemptOutcome.OK, started_at=utcnow(), latency_ms=5,
                cost_usd=Decimal("0.05"), reserved_usd=Decimal("0.40")))
            # A call lost with its worker may have been charged: its worst case counts.
            assert repo.close_lost_attempts(s, second) == 1
        with session_scope() as s:
            run = s.get(Run, run_id)
            assert run is not None
            assert (run.spent_usd, run.reserved_usd) == (Decimal("0.45"), Decimal(0))
        # The lost call's answer arrives after all: its real cost replaces the worst case.
        with session_scope() as s:
            repo.record_attempt(s, repo.AttemptRecord(
                id=lost, item_id=second, run_id=run_id, model="gpt-4.1-mini",
                outcome=AttemptOutcome.OK, started_at=utcnow(), latency_ms=5,
                cost_usd=Decimal("0.07"), reserved_usd=Decimal("0.40")))
        with session_scope() as s:
            run = s.get(Run, run_id)
            assert run is not None
            assert (run.spent_usd, run.reserved_usd) == (Decimal("0.12"), Decimal(0))

    def test_a_new_budget_on_resume(self, migrated_db: str) -> None:
        run_id, (item_id,) = self.budgeted_run("0.01", 1)
        assert self.begin(run_id, item_id, "0.02") is None
        with session_scope() as s:
            repo.pause_run(s, run_id, "budget")
            repo.resume_run(s, run_id, budget_usd=Decimal("5"))
        assert self.begin(run_id, item_id, "0.02") is not None
