"""The models the simulator answers for, as the API names them.

A name is a base model, one of its dated snapshots (``gpt-4.1-mini-2025-04-14``), or a
fine-tuned model (``ft:gpt-4.1-mini:acme::x``, answered as its base). Anything else is
``model_not_found``: names are never matched by prefix, so ``gpt-doesnotexist`` is refused.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Family(StrEnum):
    """What a model takes: reasoning models take ``reasoning``, the others ``temperature``."""

    REASONING = "reasoning"
    SAMPLING = "sampling"


MODELS: dict[str, Family] = {
    **dict.fromkeys(("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini",
                     "chatgpt-4o-latest", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo"),
                    Family.SAMPLING),
    **dict.fromkeys(("o1", "o1-pro", "o3", "o3-mini", "o3-pro", "o4-mini", "gpt-5",
                     "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.1-codex",
                     "codex-mini-latest"), Family.REASONING),
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


def family(name: str) -> Family | None:
    """Whether ``name`` is a reasoning model, a sampling one, or unknown (None)."""
    base = base_model(name)
    return None if base is None else MODELS[base]
