from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from workers.errors import Usage
from workers.llm.pricing import Tier, cost_usd, price_for, price_table
from workers.settings import Settings

tokens = st.integers(min_value=0, max_value=10_000_000)


def test_known_model_cost() -> None:
    usage = Usage(input_tokens=1_000_000, cached_tokens=200_000, output_tokens=100_000)
    # 800k uncached * 0.40 + 200k cached * 0.10 + 100k out * 1.60, per million
    assert cost_usd("gpt-4.1-mini", usage) == Decimal("0.32") + Decimal("0.02") + Decimal("0.16")


def test_snapshot_names_price_as_their_family() -> None:
    assert price_for("gpt-4.1-mini-2025-04-14") == price_for("gpt-4.1-mini")
    assert price_for("gpt-4.1-2025-04-14") == price_for("gpt-4.1")
    assert price_for("unknown-model") is None
    assert cost_usd("unknown-model", Usage(input_tokens=10)) == 0


@given(tokens, tokens, tokens, st.integers(min_value=1, max_value=1000))
def test_cost_grows_with_every_kind_of_token(inp: int, cached: int, out: int, more: int) -> None:
    cached = min(cached, inp)
    base = cost_usd("gpt-5-mini", Usage(input_tokens=inp, cached_tokens=cached, output_tokens=out))
    assert base >= 0
    assert cost_usd("gpt-5-mini", Usage(input_tokens=inp + more, cached_tokens=cached,
                                        output_tokens=out)) > base
    assert cost_usd("gpt-5-mini", Usage(input_tokens=inp, cached_tokens=cached,
                                        output_tokens=out + more)) > base


@given(tokens, tokens)
def test_a_cached_token_never_costs_more_than_an_uncached_one(inp: int, cached: int) -> None:
    cached = min(cached, inp)
    full = cost_usd("gpt-4.1", Usage(input_tokens=inp))
    assert cost_usd("gpt-4.1", Usage(input_tokens=inp, cached_tokens=cached)) <= full


def test_batch_and_flex_bill_half_of_every_rate() -> None:
    usage = Usage(input_tokens=1_000_000, cached_tokens=200_000, output_tokens=100_000)
    standard = cost_usd("gpt-5-mini", usage)
    for tier in (Tier.BATCH, Tier.FLEX):
        assert cost_usd("gpt-5-mini", usage, tier=tier) * 2 == standard


def test_prices_from_settings_override_and_add_models() -> None:
    settings = Settings(_env_file=None, prices={  # type: ignore[call-arg]
        "gpt-4.1-mini": {"input": "1", "cached_input": "0.5", "output": "2"},
        "in-house-model": {"input": "3", "cached_input": "3", "output": "3"}})
    table = price_table(settings)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost("gpt-4.1-mini-2025-04-14", usage) == Decimal(3)
    assert table.cost("in-house-model", usage) == Decimal(6)
    assert table.cost("gpt-5-mini", usage) == cost_usd("gpt-5-mini", usage)  # untouched
    assert price_table(settings) is table  # built once
    assert price_table(Settings(_env_file=None)).cost(  # type: ignore[call-arg]
        "in-house-model", usage) == 0
