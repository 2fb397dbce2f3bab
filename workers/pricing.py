"""Prices per model (USD per 1M tokens, standard tier) and the cost of one call.

Figures are the published standard rates (see docs/pricing notes in README). A model
snapshot name such as ``gpt-4.1-mini-2025-04-14`` is priced as its family.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from workers.errors import Usage

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal


def _p(inp: str, cached: str, out: str) -> Price:
    return Price(Decimal(inp), Decimal(cached), Decimal(out))


PRICES: dict[str, Price] = {
    "gpt-4.1": _p("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": _p("0.40", "0.10", "1.60"),
    "gpt-4.1-nano": _p("0.10", "0.025", "0.40"),
    "gpt-4o": _p("2.50", "1.25", "10.00"),
    "gpt-4o-mini": _p("0.15", "0.075", "0.60"),
    "gpt-5": _p("1.25", "0.125", "10.00"),
    "gpt-5-mini": _p("0.25", "0.025", "2.00"),
    "gpt-5-nano": _p("0.05", "0.005", "0.40"),
    "gpt-5.1": _p("1.25", "0.125", "10.00"),
    "gpt-5.2": _p("1.75", "0.175", "14.00"),
    "gpt-5.4": _p("2.50", "0.25", "15.00"),
    "gpt-5.4-mini": _p("0.75", "0.075", "4.50"),
    "gpt-5.4-nano": _p("0.20", "0.02", "1.25"),
    "gpt-5.5": _p("5.00", "0.50", "30.00"),
    "o3": _p("2.00", "0.50", "8.00"),
    "o4-mini": _p("1.10", "0.275", "4.40"),
}


def price_for(model: str) -> Price | None:
    """The price of ``model`` or of the longest known name it starts with."""
    if model in PRICES:
        return PRICES[model]
    matches = [name for name in PRICES if model.startswith(name + "-")]
    return PRICES[max(matches, key=len)] if matches else None


def cost_usd(model: str, usage: Usage) -> Decimal:
    """Dollars one call cost: uncached input, cached input and output (reasoning included).

    Unknown models cost 0 rather than a guess; ``docpipe status`` still shows their tokens.
    """
    price = price_for(model)
    if price is None:
        return Decimal(0)
    cached = min(usage.cached_tokens, usage.input_tokens)
    total = (
        (usage.input_tokens - cached) * price.input
        + cached * price.cached_input
        + usage.output_tokens * price.output
    )
    return total / _MILLION
