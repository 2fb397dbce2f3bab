"""The item state machine's table: what each state may become, and what it never may."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import workers.settings
from workers.db import states
from workers.db.states import ItemStatus as S

ITEMS_MODULE = Path(workers.settings.__file__).parent / "db" / "repository" / "items.py"


def _leaving(status: S) -> set[str]:
    return {t.name for t in states.TRANSITIONS if t.allows(status) and t.target != status}


def test_every_transition_is_listed_once_and_starts_somewhere() -> None:
    constants = [v for v in vars(states).values() if isinstance(v, states.Transition)]
    assert sorted(id(t) for t in constants) == sorted(id(t) for t in states.TRANSITIONS)
    assert len(set(states.TRANSITIONS)) == len(states.TRANSITIONS)
    for transition in states.TRANSITIONS:
        assert transition.sources and transition.sources <= states.ALL, transition.name
        assert transition.by, transition.name


def test_every_state_is_reachable_from_where_items_are_created() -> None:
    seen = set(states.INITIAL)
    frontier = list(seen)
    while frontier:
        status = frontier.pop()
        for transition in states.TRANSITIONS:
            if transition.allows(status) and transition.target not in seen:
                seen.add(transition.target)
                frontier.append(transition.target)
    assert seen == states.ALL


def test_a_terminal_item_only_takes_a_late_answer_or_a_replay() -> None:
    assert set(S.TERMINAL) == {S.SUCCEEDED, S.FAILED}
    assert states.OPEN == states.ALL - set(S.TERMINAL)
    # A paid answer that lands late is still stored; a late error never undoes a success.
    assert _leaving(S.SUCCEEDED) == {"replay"}
    assert _leaving(S.FAILED) == {"succeed", "replay"}
    assert not states.reachable(S.SUCCEEDED, S.FAILED)


def test_a_held_item_moves_only_through_its_holder_its_death_a_lost_lease_or_its_answer(
) -> None:
    assert _leaving(S.RUNNING) == {
        "requeue", "void_dead", "succeed", "retry", "park", "release", "release_after_error",
        "fail"}
    # Neither replay nor cancel takes an item from under the worker holding it.
    assert not states.REPLAY.allows(S.RUNNING) and not states.CANCEL.allows(S.RUNNING)


def test_a_batched_item_leaves_only_with_its_batch() -> None:
    assert _leaving(S.BATCHED) == {"succeed", "fail", "unbatch", "send_live"}
    assert not states.REPLAY.allows(S.BATCHED) and not states.CANCEL.allows(S.BATCHED)


def test_a_reduce_waits_for_its_parts() -> None:
    assert _leaving(S.BLOCKED) == {"unblock", "succeed", "fail", "cancel"}
    assert not states.CLAIM.allows(S.BLOCKED) and not states.REPLAY.allows(S.BLOCKED)


def test_waits_that_are_nobodys_fault_and_errors_start_only_from_a_claim() -> None:
    for transition in (states.RETRY, states.PARK, states.RELEASE, states.RELEASE_AFTER_ERROR,
                       states.RELEASE_AFTER_ERROR_FAILED):
        assert transition.sources == {S.RUNNING}, transition.name


def _transitions_written(module: Path) -> set[str]:
    """The names of the transitions the module refers to (``states.CLAIM`` and so on)."""
    return set(re.findall(r"\bstates\.([A-Z][A-Z_]*)\b", module.read_text()))


def test_every_transition_has_its_guarded_function() -> None:
    names = {name for name, value in vars(states).items() if isinstance(value, states.Transition)}
    assert names <= _transitions_written(ITEMS_MODULE)


@given(st.lists(st.sampled_from(states.TRANSITIONS), max_size=40),
       st.sampled_from(sorted(states.INITIAL)))
def test_any_walk_through_the_table_keeps_the_invariants(walk: list[states.Transition],
                                                        start: S) -> None:
    """Apply transitions in any order, each only where its guard allows (as the UPDATE's
    WHERE does): an item is always in a known state, a success is undone only by a replay,
    and a failure only by a replay or a paid answer."""
    status = start
    for transition in walk:
        before = status
        if transition.allows(status):
            status = transition.target
        assert status in states.ALL
        if before == S.SUCCEEDED and status != before:
            assert transition is states.REPLAY
        if before == S.FAILED and status != before:
            assert transition in (states.REPLAY, states.SUCCEED)
        if status == S.RUNNING:
            assert transition is states.CLAIM or before == S.RUNNING
