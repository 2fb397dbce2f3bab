"""The simulator's model table: real names, snapshots and fine-tuned names; nothing by
prefix."""

from __future__ import annotations

import pytest

from workers.simulator.models import Family, base_model, family


@pytest.mark.parametrize(("name", "base"), [
    ("gpt-4.1-mini", "gpt-4.1-mini"),
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("chatgpt-4o-latest", "chatgpt-4o-latest"),
    ("ft:gpt-4.1-mini:acme::x", "gpt-4.1-mini"),
    ("ft:gpt-4o-mini-2024-07-18:acme:invoices:AbC123", "gpt-4o-mini"),
    ("o4-mini", "o4-mini"),
    ("gpt-doesnotexist", None),
    ("gpt-4.1-minimal", None),
    ("o4", None),
    ("ft:", None),
    ("ft:gpt-nope:acme::x", None),
    ("gpt-4.1-mini-2025-4-14", None),
])
def test_names_resolve_to_their_base_or_nothing(name: str, base: str | None) -> None:
    assert base_model(name) == base


def test_families() -> None:
    assert family("o4-mini") is Family.REASONING and family("gpt-5-mini") is Family.REASONING
    assert family("ft:gpt-4.1-mini:acme::x") is Family.SAMPLING
    assert family("gpt-doesnotexist") is None
