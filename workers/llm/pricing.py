"""Prices per model (USD per 1M tokens) and what a call costs.

The table ships the published standard rates (see ../shared/reference: litellm's price file,
matching copies of the pricing page). Batch and Flex bill half of the standard input,
cached-input and output rates; whether a batch bills cached input at half the cached rate is
not documented, and is assumed. ``DOCPIPE_PRICES`` overrides or adds models. A snapshot name
such as ``gpt-4.1-mini-2025-04-14`` is priced as its family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from workers.errors import ConfigurationError, Usage
from workers.settings import Settings

_MILLION = Decimal(1_000_000)
#: Batch and Flex rates as a share of the standard ones.
DISCOUNTED_SHARE = Decimal("0.5")


def usd(amount: Decimal) -> str:
    """Dollars for people: cents for large amounts, four decimals for small ones."""
    return f"${amount:,.2f}" if abs(amount) >= 100 else f"${amount:,.4f}"


class Tier(StrEnum):
    """How a request was processed, which decides its rates."""

    DEFAULT = "default"
    BATCH = "batch"
    FLEX = "flex"


@dataclass(frozen=True)
class Price:
    """Standard-tier USD per 1M tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal

    def at(self, tier: Tier) -> Price:
        """The rates of ``tier``."""
        if tier == Tier.DEFAULT:
            return self
        return Price(self.input * DISCOUNTED_SHARE, self.cached_input * DISCOUNTED_SHARE,
                     self.output * DISCOUNTED_SHARE)


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


class PriceTable:
    """The shipped prices with the user's overrides on top."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.prices = PRICES | dict(overrides or {})

    def price_for(self, model: str) -> Price | None:
        """The price of ``model`` or of the longest known name it starts with."""
        if model in self.prices:
            return self.prices[model]
        matches = [name for name in self.prices if model.startswith(name + "-")]
        return self.prices[max(matches, key=len)] if matches else None

    def require(self, model: str) -> Price:
        """The price of ``model``, for a run with a budget: a budget on a model without a
        price would never be reached, so such a run is refused with the setting to add.

        Raises:
            ConfigurationError: the table has no price for ``model``.
        """
        price = self.price_for(model)
        if price is None:
            raise ConfigurationError(
                f"--budget-usd cannot be enforced: docpipe has no price for model {model!r}. "
                f"Add it to DOCPIPE_PRICES, e.g. DOCPIPE_PRICES='{{\"{model}\": {{\"input\": "
                '0.4, "cached_input": 0.1, "output": 1.6}}\' (USD per 1M tokens), or run '
                "without a budget")
        return price

    def cost(self, model: str, usage: Usage, *, tier: Tier = Tier.DEFAULT) -> Decimal:
        """Dollars one call cost: uncached input, cached input and output (reasoning included).

        Unknown models cost 0 rather than a guess; ``docpipe status`` still shows their tokens.
        """
        price = self.price_for(model)
        if price is None:
            return Decimal(0)
        rates = price.at(tier)
        cached = min(usage.cached_tokens, usage.input_tokens)
        total = ((usage.input_tokens - cached) * rates.input + cached * rates.cached_input
                 + usage.output_tokens * rates.output)
        return total / _MILLION


#: The shipped prices alone, without ``DOCPIPE_PRICES``.
SHIPPED_PRICES = PriceTable()
_tables: dict[str, PriceTable] = {}


def price_table(settings: Settings) -> PriceTable:
    """The shipped prices with ``DOCPIPE_PRICES`` on top (built once per distinct setting)."""
    if not settings.prices:
        return SHIPPED_PRICES
    key = repr(sorted(settings.prices.items()))
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = PriceTable({
            name: Price(p.input, p.cached_input, p.output) for name, p in settings.prices.items()})
    return table


def price_for(model: str) -> Price | None:
    """The shipped price of ``model``; see :meth:`PriceTable.price_for`."""
    return SHIPPED_PRICES.price_for(model)


def cost_usd(model: str, usage: Usage, *, tier: Tier = Tier.DEFAULT) -> Decimal:
    """What a call cost at the shipped prices; see :meth:`PriceTable.cost`."""
    return SHIPPED_PRICES.cost(model, usage, tier=tier)
