"""A corpus of Responses requests, each with the answer the real API gives it.

Written from what the API is reported to refuse (``shared/reference/api_rejections.md``) and
the ``CreateResponse`` schema of OpenAI's OpenAPI specification: parameters a model does not
take, values out of range or of the wrong type, fields the API does not know. Each case is a
change to an otherwise valid request and its verdict: None (accepted) or the status, ``code``
and ``param`` of the refusal. The simulator must give every verdict here, and docpipe's lint
must refuse a pipeline that would send a refused one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tests.support.schemas import STRING, obj


class Verdict(NamedTuple):
    """How the API refuses a request."""

    status: int
    code: str
    param: str | None


class Case(NamedTuple):
    """A change to a valid request, at its top level, and the API's verdict."""

    name: str
    changes: dict[str, Any]
    verdict: Verdict | None


def _unsupported(param: str) -> Verdict:
    return Verdict(400, "unsupported_parameter", param)


def _user(content: Any, role: str = "user") -> list[dict[str, Any]]:
    return [{"role": role, "content": content}]


_FUNCTION = {"type": "function", "name": "lookup", "description": "Look a name up.",
             "parameters": obj({"name": STRING}), "strict": True}

CASES: list[Case] = [
    Case("sampling-model-temperature", {"model": "gpt-4.1-mini", "temperature": 0.2}, None),
    Case("temperature-at-2", {"model": "gpt-4.1", "temperature": 2}, None),
    Case("top-p-at-1", {"model": "gpt-4o-mini", "top_p": 1}, None),
    Case("snapshot-name", {"model": "gpt-4.1-mini-2025-04-14"}, None),
    Case("fine-tuned-name", {"model": "ft:gpt-4.1-mini:acme::x1y2"}, None),
    Case("chatgpt-latest", {"model": "chatgpt-4o-latest"}, None),
    Case("o-series-effort", {"model": "o4-mini", "reasoning": {"effort": "low"}}, None),
    Case("gpt-5-minimal", {"model": "gpt-5-mini", "reasoning": {"effort": "minimal"}}, None),
    Case("gpt-5.1-none", {"model": "gpt-5.1", "reasoning": {"effort": "none"}}, None),
    Case("reasoning-null-effort", {"model": "gpt-4.1-mini", "reasoning": {"effort": None}},
         None),
    Case("metadata-16-pairs", {"metadata": {f"k{i}": "v" for i in range(16)}}, None),
    Case("metadata-512-chars", {"metadata": {"k": "v" * 512}}, None),
    Case("developer-message", {"input": _user("Summarise: hello", "developer")}, None),
    Case("string-input", {"input": "Summarise: hello"}, None),
    Case("function-tool", {"tools": [_FUNCTION]}, None),
    Case("max-output-at-model-limit", {"model": "gpt-4.1-mini", "max_output_tokens": 32768},
         None),
    # Parameters the model does not take.
    Case("effort-on-sampling-model", {"model": "gpt-4.1-mini", "reasoning": {"effort": "low"}},
         _unsupported("reasoning.effort")),
    Case("temperature-on-o4-mini", {"model": "o4-mini", "temperature": 0.2},
         _unsupported("temperature")),
    Case("top-p-on-gpt-5", {"model": "gpt-5", "top_p": 0.5}, _unsupported("top_p")),
    Case("none-on-codex", {"model": "gpt-5.1-codex", "reasoning": {"effort": "none"}},
         Verdict(400, "unsupported_value", "reasoning.effort")),
    Case("minimal-on-o4-mini", {"model": "o4-mini", "reasoning": {"effort": "minimal"}},
         Verdict(400, "unsupported_value", "reasoning.effort")),
    Case("xhigh-on-gpt-5", {"model": "gpt-5", "reasoning": {"effort": "xhigh"}},
         Verdict(400, "unsupported_value", "reasoning.effort")),
    # Values out of range or of the wrong type.
    Case("temperature-3", {"temperature": 3},
         Verdict(400, "decimal_above_max_value", "temperature")),
    Case("temperature-negative", {"temperature": -0.1},
         Verdict(400, "decimal_below_min_value", "temperature")),
    Case("temperature-string", {"temperature": "hot"},
         Verdict(400, "invalid_type", "temperature")),
    Case("effort-bogus", {"model": "o4-mini", "reasoning": {"effort": "bogus"}},
         Verdict(400, "invalid_value", "reasoning.effort")),
    Case("metadata-number", {"metadata": {"batch": 7}},
         Verdict(400, "invalid_type", "metadata.batch")),
    Case("metadata-17-pairs", {"metadata": {f"k{i}": "v" for i in range(17)}},
         Verdict(400, "object_above_max_properties", "metadata")),
    Case("metadata-513-chars", {"metadata": {"k": "v" * 513}},
         Verdict(400, "string_above_max_length", "metadata.k")),
    Case("metadata-key-65-chars", {"metadata": {"k" * 65: "v"}},
         Verdict(400, "string_above_max_length", "metadata")),
    Case("max-output-15", {"max_output_tokens": 15},
         Verdict(400, "integer_below_min_value", "max_output_tokens")),
    Case("max-output-past-model-limit", {"model": "gpt-4.1-mini", "max_output_tokens": 32769},
         Verdict(400, "integer_above_max_value", "max_output_tokens")),
    Case("service-tier-bogus", {"service_tier": "cheap"},
         Verdict(400, "invalid_value", "service_tier")),
    Case("part-type-text", {"input": _user([{"type": "text", "text": "hello"}])},
         Verdict(400, "invalid_value", "input[0].content[0].type")),
    Case("role-robot", {"input": _user("hello", "robot")},
         Verdict(400, "invalid_value", "input[0].role")),
    Case("tool-type-bogus", {"tools": [{"type": "bogus"}]},
         Verdict(400, "invalid_value", "tools[0].type")),
    Case("tool-not-strict-schema",
         {"tools": [_FUNCTION | {"parameters": {"oneOf": [obj({"a": STRING})]}}]},
         Verdict(400, "invalid_function_parameters", "tools[0].parameters")),
    # Fields the API does not know, or has moved.
    Case("unknown-field", {"foo": 1}, Verdict(400, "unknown_parameter", "foo")),
    Case("max-tokens", {"max_tokens": 100}, Verdict(400, "unknown_parameter", "max_tokens")),
    Case("response-format", {"response_format": {"type": "json_object"}},
         Verdict(400, "unsupported_parameter", "response_format")),
    Case("reasoning-effort-top-level", {"reasoning_effort": "low"},
         Verdict(400, "unknown_parameter", "reasoning_effort")),
    # The simulator's own limit: it answers JSON, never server-sent events.
    Case("stream", {"stream": True}, Verdict(400, "unsupported_value", "stream")),
    # Models.
    Case("unknown-model", {"model": "gpt-doesnotexist"}, Verdict(404, "model_not_found", None)),
    Case("prefix-of-a-model", {"model": "gpt-4.1-min"}, Verdict(404, "model_not_found", None)),
]


def changed(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``changes`` applied at the top level."""
    return {**body, **changes}
