"""What docpipe knows of the models a pipeline may name, to check a pipeline when it loads.

For each model: whether it reasons (it takes ``reasoning.effort``, and refuses
``temperature`` and ``top_p``) or samples (the reverse), the reasoning efforts it offers, and
its output and context limits. The API refuses a request that breaks these with a 400 that
every document of a run would meet, so a pipeline that would send one does not load.

A dated snapshot (``gpt-4.1-mini-2025-04-14``) and a fine-tuned model
(``ft:gpt-4.1-mini:acme::x``) are their base model. A name the table does not know is not
refused (a new model, a deployment behind ``OPENAI_BASE_URL``); its parameters cannot be
checked, so loading it warns (:func:`unknown_model_warning`). Prices are the workers'
(``workers.llm.pricing``, ``DOCPIPE_PRICES``). The simulator keeps a table of its own
(``workers/simulator/models.py``), so a mistake in this one meets the simulator's refusal in
the tests instead of being shared by both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Family(StrEnum):
    """Reasoning models take ``reasoning``; sampling models take ``temperature``, ``top_p``."""

    REASONING = "reasoning"
    SAMPLING = "sampling"


@dataclass(frozen=True)
class ModelLimits:
    """What one base model takes."""

    family: Family
    max_output_tokens: int
    context_window: int
    #: Reasoning efforts offered; empty for a sampling model.
    efforts: tuple[str, ...] = ()


_O = ("low", "medium", "high")
_GPT5 = ("minimal", "low", "medium", "high")
_GPT51 = ("none", "low", "medium", "high")
_GPT52 = ("none", "low", "medium", "high", "xhigh")
_LONG = 1_047_576


def _s(max_output: int, context: int) -> ModelLimits:
    return ModelLimits(Family.SAMPLING, max_output, context)


def _r(efforts: tuple[str, ...], max_output: int = 100_000, context: int = 200_000
       ) -> ModelLimits:
    return ModelLimits(Family.REASONING, max_output, context, efforts)


#: The models docpipe checks pipelines against. Models after gpt-5.2 are given its efforts.
MODELS: dict[str, ModelLimits] = {
    "gpt-4.1": _s(32_768, _LONG), "gpt-4.1-mini": _s(32_768, _LONG),
    "gpt-4.1-nano": _s(32_768, _LONG),
    "gpt-4o": _s(16_384, 128_000), "gpt-4o-mini": _s(16_384, 128_000),
    "chatgpt-4o-latest": _s(16_384, 128_000), "gpt-4-turbo": _s(4_096, 128_000),
    "gpt-4": _s(8_192, 8_192), "gpt-3.5-turbo": _s(4_096, 16_385),
    "o1": _r(_O), "o1-pro": _r(_O), "o3": _r(_O), "o3-mini": _r(_O), "o3-pro": _r(_O),
    "o4-mini": _r(_O), "codex-mini-latest": _r(_O),
    "gpt-5": _r(_GPT5, 128_000, 400_000), "gpt-5-mini": _r(_GPT5, 128_000, 400_000),
    "gpt-5-nano": _r(_GPT5, 128_000, 400_000),
    "gpt-5.1": _r(_GPT51, 128_000, 400_000), "gpt-5.1-codex": _r(_O, 128_000, 400_000),
    "gpt-5.2": _r(_GPT52, 128_000, 400_000), "gpt-5.4": _r(_GPT52, 128_000, 400_000),
    "gpt-5.4-mini": _r(_GPT52, 128_000, 400_000), "gpt-5.4-nano": _r(_GPT52, 128_000, 400_000),
    "gpt-5.5": _r(_GPT52, 128_000, 400_000),
}

_DATED = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")


def base_model(name: str) -> str | None:
    """The table's name for ``name`` (a snapshot's or fine-tune's base), or None."""
    if name.startswith("ft:"):
        parts = name.split(":")
        return base_model(parts[1]) if len(parts) >= 3 and parts[1] else None
    if name in MODELS:
        return name
    dated = _DATED.match(name)
    return dated["base"] if dated and dated["base"] in MODELS else None


def limits(name: str) -> ModelLimits | None:
    """What ``name`` takes, or None if docpipe does not know the model."""
    base = base_model(name)
    return None if base is None else MODELS[base]


def unknown_model_warning(name: str) -> str | None:
    """Why a pipeline on ``name`` cannot be checked, or None if docpipe knows the model."""
    if limits(name) is not None:
        return None
    return (f"model {name!r} is not one docpipe knows: its parameters and limits are not "
            "checked before the first call (a typo is a model_not_found pause then)")


@dataclass(frozen=True)
class Refused:
    """A request field the model refuses: ``param`` as the API names it, and why."""

    param: str
    reason: str


def refused_parameters(name: str, body: Mapping[str, Any]) -> list[Refused]:
    """What the API would refuse in ``body`` because of its model (none for an unknown one).

    ``body`` is a request as the pipeline builds it: ``temperature``, ``top_p``,
    ``reasoning.effort`` and ``max_output_tokens`` are checked against the model.
    """
    model = limits(name)
    if model is None:
        return []
    found: list[Refused] = []
    if model.family is Family.REASONING:
        found += [Refused(param, f"{name} is a reasoning model and does not take {param}; "
                          "set reasoning_effort instead") for param in ("temperature", "top_p")
                  if body.get(param) is not None]
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    if effort is not None and model.family is Family.SAMPLING:
        found.append(Refused("reasoning.effort", f"{name} is not a reasoning model and does "
                             "not take reasoning.effort; remove it, or use temperature"))
    elif effort is not None and effort not in model.efforts:
        found.append(Refused("reasoning.effort", f"{name} does not offer {effort!r}; it "
                             f"offers {', '.join(model.efforts)}"))
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit > model.max_output_tokens:
        found.append(Refused("max_output_tokens", f"{name} writes at most "
                             f"{model.max_output_tokens:,} tokens; ask for no more"))
    return found
