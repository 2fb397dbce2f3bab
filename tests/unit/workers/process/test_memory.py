"""The per-process memory limit: past it, the process says why on its call and dies."""

from __future__ import annotations

import mmap
import multiprocessing
import signal
from multiprocessing.connection import Connection

from workers.process import memory


def _hog(limit_mb: int, report: Connection) -> None:
    def on_limit(calls: list[memory.Call], message: str) -> None:
        for call in calls:
            report.send((call.item_id, call.attempt_id, message))

    memory.start_watchdog(limit_mb, on_limit)
    memory.begin_call(item_id=7, attempt_id=70)
    hoard = []
    for _ in range(2000):
        hoard.append(bytearray(1024 * 1024))  # touched pages: resident
    report.send("survived")


def test_a_process_past_its_limit_records_the_call_and_is_killed() -> None:
    baseline_mb = memory.resident_bytes() // (1024 * 1024)
    limit = baseline_mb + 100
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_hog, args=(limit, sender))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert receiver.poll(1)
    item_id, attempt_id, message = receiver.recv()
    assert (item_id, attempt_id) == (7, 70)
    assert f"memory limit of {limit} MB" in message
    assert not receiver.poll(0.1), "it must not survive the allocation"


def _group_hog(limit_mb: int, report: Connection) -> None:
    def on_limit(calls: list[memory.Call], message: str) -> None:
        report.send(([(c.item_id, c.attempt_id) for c in calls], message))

    memory.start_watchdog(limit_mb, on_limit)
    memory.begin_call(item_id=8, attempt_id=80)
    memory.begin_call(item_id=9, attempt_id=90)
    memory.end_call(80)  # answered before the hog
    memory.begin_call(item_id=10, attempt_id=100)
    hoard = [bytearray(1024 * 1024) for _ in range(2000)]
    report.send(f"survived {len(hoard)}")


def test_every_call_in_flight_is_named_when_a_group_blows_the_limit() -> None:
    limit = memory.resident_bytes() // (1024 * 1024) + 100
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_group_hog,
                                                        args=(limit, sender))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    calls, message = receiver.recv()
    assert sorted(calls) == [(9, 90), (10, 100)]
    assert "one of 2 calls in flight" in message


def test_resident_size_is_this_processes() -> None:
    # Measured against the block's release, not a "before": memory that another test freed
    # can leave the process between a "before" and the allocation (seen once in a full run).
    # A mapping of its own, every page written: a bytes object goes through malloc, which
    # may reuse memory already resident and keep it after the free (seen once in CI: no
    # change at all between the two readings).
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    block.write(b"\x01" * len(block))
    with_block = memory.resident_bytes()
    block.close()
    assert with_block - memory.resident_bytes() > 60 * 1024 * 1024
