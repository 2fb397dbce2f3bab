"""The models the simulator answers for, as the API names them, and what each one takes.

A name is a base model, one of its dated snapshots (``gpt-4.1-mini-2025-04-14``), or a
fine-tuned model (``ft:gpt-4.1-mini:acme::x``, answered as its base). Anything else is
``model_not_found``: names are never matched by prefix, so ``gpt-doesnotexist`` is refused.

Each model has its family (reasoning models take ``reasoning``, the others ``temperature``
and ``top_p``), the reasoning efforts it offers, its output and context limits, and the
per-minute limits its ``x-ratelimit-*`` headers report when the simulator is given none:
a tier-5 organisation's, so they never hold a test back. Models newer than gpt-5.2 are
given gpt-5.2's efforts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    """What a model takes: reasoning models take ``reasoning``, the others ``temperature``."""

    REASONING = "reasoning"
    SAMPLING = "sampling"


@dataclass(frozen=True)
class Model:
    """What the API accepts for one base model."""

    family: Family
    max_output_tokens: int
    context_window: int
    rpm: int
    tpm: int
    #: Reasoning efforts the model offers, in the API's order; none for a sampling model.
    efforts: tuple[str, ...] = ()


_O_SERIES = ("low", "medium", "high")
_GPT5 = ("minimal", "low", "medium", "high")
_GPT51 = ("none", "low", "medium", "high")
_GPT52 = ("none", "low", "medium", "high", "xhigh")


def _sampling(max_output: int, context: int, rpm: int = 30_000,
              tpm: int = 150_000_000) -> Model:
    return Model(Family.SAMPLING, max_output, context, rpm, tpm)


def _reasoning(efforts: tuple[str, ...], max_output: int = 100_000, context: int = 200_000,
               rpm: int = 30_000, tpm: int = 150_000_000) -> Model:
    return Model(Family.REASONING, max_output, context, rpm, tpm, efforts)


MODELS: dict[str, Model] = {
    "gpt-4.1": _sampling(32_768, 1_047_576, 10_000, 30_000_000),
    "gpt-4.1-mini": _sampling(32_768, 1_047_576),
    "gpt-4.1-nano": _sampling(32_768, 1_047_576),
    "gpt-4o": _sampling(16_384, 128_000, 10_000, 30_000_000),
    "gpt-4o-mini": _sampling(16_384, 128_000),
    "chatgpt-4o-latest": _sampling(16_384, 128_000, 200, 500_000),
    "gpt-4-turbo": _sampling(4_096, 128_000, 10_000, 2_000_000),
    "gpt-4": _sampling(8_192, 8_192, 10_000, 1_000_000),
    "gpt-3.5-turbo": _sampling(4_096, 16_385, 10_000, 50_000_000),
    "o1": _reasoning(_O_SERIES, rpm=10_000, tpm=30_000_000),
    "o1-pro": _reasoning(_O_SERIES, rpm=10_000, tpm=30_000_000),
    "o3": _reasoning(_O_SERIES, rpm=10_000, tpm=30_000_000),
    "o3-mini": _reasoning(_O_SERIES),
    "o3-pro": _reasoning(_O_SERIES, rpm=10_000, tpm=30_000_000),
    "o4-mini": _reasoning(_O_SERIES),
    "codex-mini-latest": _reasoning(_O_SERIES),
    "gpt-5": _reasoning(_GPT5, 128_000, 400_000, 15_000, 40_000_000),
    "gpt-5-mini": _reasoning(_GPT5, 128_000, 400_000, 30_000, 180_000_000),
    "gpt-5-nano": _reasoning(_GPT5, 128_000, 400_000, 30_000, 180_000_000),
    "gpt-5.1": _reasoning(_GPT51, 128_000, 400_000, 15_000, 40_000_000),
    "gpt-5.1-codex": _reasoning(_O_SERIES, 128_000, 400_000, 15_000, 40_000_000),
    "gpt-5.2": _reasoning(_GPT52, 128_000, 400_000, 15_000, 40_000_000),
    "gpt-5.4": _reasoning(_GPT52, 128_000, 400_000, 15_000, 40_000_000),
    "gpt-5.4-mini": _reasoning(_GPT52, 128_000, 400_000, 30_000, 180_000_000),
    "gpt-5.4-nano": _reasoning(_GPT52, 128_000, 400_000, 30_000, 180_000_000),
    "gpt-5.5": _reasoning(_GPT52, 128_000, 400_000, 15_000, 40_000_000),
}

_SNAPSHOT = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")


def base_model(name: str) -> str | None:
    """The base model ``name`` stands for, or None if the API knows no such model."""
    if name.startswith("ft:"):
        parts = name.split(":")
        return base_model(parts[1]) if len(parts) >= 3 and parts[1] else None
    if name in MODELS:
        return name
    snapshot = _SNAPSHOT.match(name)
    return snapshot["base"] if snapshot and snapshot["base"] in MODELS else None


def model(name: str) -> Model | None:
    """What ``name`` accepts, or None if the API knows no such model."""
    base = base_model(name)
    return None if base is None else MODELS[base]


def family(name: str) -> Family | None:
    """Whether ``name`` is a reasoning model, a sampling one, or unknown (None)."""
    found = model(name)
    return None if found is None else found.family
