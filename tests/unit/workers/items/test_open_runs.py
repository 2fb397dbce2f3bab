"""Only a run's last open group in a process asks whether the run has ended."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.db import repository as repo
from workers.items.group import OpenRuns


def items(*run_ids: int) -> list[repo.ClaimedItem]:
    return [repo.ClaimedItem(id=i, run_id=run_id, attempts=1, chunk_index=0, pipeline="p",
                             pipeline_version="v", model="m", document_id=i,
                             content_hash=str(i), text="t")
            for i, run_id in enumerate(run_ids)]


def test_a_run_is_done_here_when_its_last_open_group_closes() -> None:
    runs = OpenRuns()
    first, second = items(1, 1, 2), items(1)
    runs.opened(first)
    runs.opened(second)
    assert runs.closed(first) == {2}, "run 1 still has an item open here"
    assert runs.closed(second) == {1}
    assert runs.closed(items(3)) == {3}, "a run never opened here is not held open"


# Closed in an order drawn as a permutation: st.randoms() imports a module of Hypothesis's
# at its first draw, and pytest's rewriting of it can meet CPython gh-106905 once a test has
# run an engine's thread.
@given(st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=4), min_size=1, max_size=8),
       st.data())
def test_each_run_is_reported_done_exactly_once_after_its_last_group(
        groups: list[list[int]], data: st.DataObject) -> None:
    runs = OpenRuns()
    opened = [items(*run_ids) for run_ids in groups]
    for group in opened:
        runs.opened(group)
    order = data.draw(st.permutations(range(len(opened))))
    reported: list[int] = []
    for position, index in enumerate(order):
        done = runs.closed(opened[index])
        still_open = {item.run_id for i in order[position + 1:] for item in opened[i]}
        assert done == {item.run_id for item in opened[index]} - still_open
        reported += done
    assert sorted(reported) == sorted({r for run_ids in groups for r in run_ids})
