"""What the simulator refuses in a ``POST /v1/responses`` body, in the API's words.

The checks follow the documented request (the ``CreateResponse`` schema of OpenAI's OpenAPI
specification) and the refusals reported from the real API (``unsupported_parameter`` for a
parameter the model does not take, ``unsupported_value`` for an effort it does not offer).
The first refusal found is the answer, as the API gives one error per request. Images and
files are checked apart (:func:`workers.simulator.inputs.media_error`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.simulator.models import Family, Model, model
from workers.simulator.strict import first_violation

#: The top-level fields of a Responses request; any other is ``unknown_parameter``.
PARAMETERS = frozenset({
    "background", "context_management", "conversation", "include", "input", "instructions",
    "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
    "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier",
    "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice",
    "tools", "top_logprobs", "top_p", "truncation", "user",
})
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ROLES = ("user", "assistant", "system", "developer")
#: Content part types the API names when it refuses another.
PART_TYPES = ("input_text", "input_image", "output_text", "refusal", "input_file",
              "computer_screenshot", "summary_text")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
TOOL_TYPES = ("function", "file_search", "web_search", "web_search_preview",
              "computer_use_preview", "code_interpreter", "image_generation", "local_shell",
              "mcp", "custom")
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


@dataclass(frozen=True)
class Refusal:
    """One error answer: its status, message, ``code`` and ``param``."""

    status: int
    message: str
    code: str | None
    param: str | None = None
    type: str = "invalid_request_error"


def refusal(body: dict[str, Any]) -> Refusal | None:
    """The API's answer to an invalid request body, or None if the body is valid."""
    found = _moved(body) or _unknown(body)
    if found:
        return found
    if body.get("stream") is True:  # the API would answer server-sent events
        return Refusal(400, "This simulator does not stream: send stream=false.",
                       "unsupported_value", "stream")
    name = body.get("model")
    if not name:
        return Refusal(400, "Missing required parameter: 'model'.",
                       "missing_required_parameter", "model")
    known = model(str(name))
    if known is None:
        return Refusal(404, f"The model `{name}` does not exist or you do not have access "
                       "to it.", "model_not_found")
    return (_sampling(body, known) or _reasoning(body, known, str(name)) or _metadata(body)
            or _service_tier(body) or _max_output(body, known) or _input(body.get("input"))
            or _text_format(body) or _tools(body.get("tools")))


def _moved(body: dict[str, Any]) -> Refusal | None:
    if "response_format" in body:
        return Refusal(400, "Unsupported parameter: 'response_format'. In the Responses API, "
                       "this parameter has moved to 'text.format'.", "unsupported_parameter",
                       "response_format")
    if "reasoning_effort" in body:
        return Refusal(400, "Unsupported parameter: 'reasoning_effort'. In the Responses API, "
                       "this parameter has moved to 'reasoning.effort'.", "unknown_parameter",
                       "reasoning_effort")
    return None


def _unknown(body: dict[str, Any]) -> Refusal | None:
    for key in body:
        if key not in PARAMETERS:
            return Refusal(400, f"Unknown parameter: '{key}'.", "unknown_parameter", key)
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "decimal", str: "string", list: "array",
            dict: "object"}.get(type(value), "value")


def _invalid_type(param: str, expected: str, value: Any) -> Refusal:
    return Refusal(400, f"Invalid type for '{param}': expected {expected}, but got "
                   f"{_a(_type_name(value))} instead.", "invalid_type", param)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])}, and {quoted[-1]}"


def _sampling(body: dict[str, Any], known: Model) -> Refusal | None:
    """``temperature`` and ``top_p``: numbers in range, and only on sampling models."""
    for param, most in (("temperature", 2), ("top_p", 1)):
        value = body.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _invalid_type(param, "a decimal", value)
        if value > most:
            return Refusal(400, f"Invalid '{param}': decimal above maximum value. Expected a "
                           f"value <= {most}, but got {value} instead.",
                           "decimal_above_max_value", param)
        if value < 0:
            return Refusal(400, f"Invalid '{param}': decimal below minimum value. Expected a "
                           f"value >= 0, but got {value} instead.",
                           "decimal_below_min_value", param)
        if known.family is Family.REASONING:
            return Refusal(400, f"Unsupported parameter: '{param}' is not supported with this "
                           "model.", "unsupported_parameter", param)
    return None


def _reasoning(body: dict[str, Any], known: Model, name: str) -> Refusal | None:
    """``reasoning``: an object whose effort the model offers; none on a sampling model."""
    reasoning = body.get("reasoning")
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        return _invalid_type("reasoning", "an object", reasoning)
    effort = reasoning.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str):
        return _invalid_type("reasoning.effort", "a string", effort)
    if effort not in EFFORTS:
        return Refusal(400, f"Invalid value: '{effort}'. Supported values are: "
                       f"{_listed(EFFORTS)}.", "invalid_value", "reasoning.effort")
    if known.family is Family.SAMPLING:
        return Refusal(400, "Unsupported parameter: 'reasoning.effort' is not supported with "
                       "this model.", "unsupported_parameter", "reasoning.effort")
    if effort not in known.efforts:
        return Refusal(400, f"Unsupported value: '{effort}' is not supported with the "
                       f"'{name}' model. Supported values are: {_listed(known.efforts)}.",
                       "unsupported_value", "reasoning.effort")
    return None


def _metadata(body: dict[str, Any]) -> Refusal | None:
    """At most 16 pairs of strings: keys up to 64 characters, values up to 512."""
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return _invalid_type("metadata", "an object", metadata)
    if len(metadata) > MAX_METADATA_PAIRS:
        return Refusal(400, "Invalid 'metadata': too many properties. Expected an object with "
                       f"at most {MAX_METADATA_PAIRS} properties, but got {len(metadata)} "
                       "instead.", "object_above_max_properties", "metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            return Refusal(400, f"Invalid 'metadata': string too long. Expected a string with "
                           f"maximum length {MAX_METADATA_KEY}, but got a string with length "
                           f"{len(key)} instead.", "string_above_max_length", "metadata")
        if not isinstance(value, str):
            return _invalid_type(f"metadata.{key}", "a string", value)
        if len(value) > MAX_METADATA_VALUE:
            return Refusal(400, f"Invalid 'metadata.{key}': string too long. Expected a string "
                           f"with maximum length {MAX_METADATA_VALUE}, but got a string with "
                           f"length {len(value)} instead.", "string_above_max_length",
                           f"metadata.{key}")
    return None


def _service_tier(body: dict[str, Any]) -> Refusal | None:
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        return Refusal(400, f"Invalid value: '{tier}'. Supported values are: "
                       f"{_listed(SERVICE_TIERS)}.", "invalid_value", "service_tier")
    return None


def _max_output(body: dict[str, Any], known: Model) -> Refusal | None:
    limit = body.get("max_output_tokens")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        return _invalid_type("max_output_tokens", "an integer", limit)
    if limit < 16:
        return Refusal(400, "Invalid 'max_output_tokens': integer below minimum value. "
                       f"Expected a value >= 16, but got {limit} instead.",
                       "integer_below_min_value", "max_output_tokens")
    if limit > known.max_output_tokens:
        return Refusal(400, "Invalid 'max_output_tokens': integer above maximum value. "
                       f"Expected a value <= {known.max_output_tokens}, but got {limit} "
                       "instead.", "integer_above_max_value", "max_output_tokens")
    return None


def _input(value: Any) -> Refusal | None:
    """A string, or a list of messages with known roles and content parts of known types."""
    if value is None or isinstance(value, str):
        return None
    if not isinstance(value, list):
        return _invalid_type("input", "one of a string or an array", value)
    for m, message in enumerate(value):
        where = f"input[{m}]"
        if not isinstance(message, dict):
            return _invalid_type(where, "an object", message)
        if message.get("type", "message") != "message":
            continue  # earlier output items and tool results, passed back as they were
        role = message.get("role")
        if role not in ROLES:
            return Refusal(400, f"Invalid value: '{role}'. Supported values are: "
                           f"{_listed(ROLES)}.", "invalid_value", f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return _invalid_type(f"{where}.content", "one of a string or an array", content)
        for p, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES:
                return Refusal(400, f"Invalid value: '{kind}'. Supported values are: "
                               f"{_listed(PART_TYPES)}.", "invalid_value",
                               f"{where}.content[{p}].type")
    return None


def _text_format(body: dict[str, Any]) -> Refusal | None:
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") != "json_schema":
        return None
    if "schema" not in fmt:
        return Refusal(400, "Missing required parameter: 'text.format.schema'.",
                       "missing_required_parameter", "text.format.schema")
    if fmt.get("strict") and (violation := first_violation(fmt["schema"])):
        return Refusal(400, violation.message(str(fmt.get("name", ""))),
                       "invalid_json_schema", "text.format.schema")
    return None


def _tools(tools: Any) -> Refusal | None:
    """A list of tools of known types; a function has a name, and a strict one a strict
    schema for its parameters."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _invalid_type("tools", "an array", tools)
    for t, tool in enumerate(tools):
        where = f"tools[{t}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in TOOL_TYPES:
            return Refusal(400, f"Invalid value: '{kind}'. Supported values are: "
                           f"{_listed(TOOL_TYPES)}.", "invalid_value", f"{where}.type")
        if kind != "function":
            continue
        if not tool.get("name"):
            return Refusal(400, f"Missing required parameter: '{where}.name'.",
                           "missing_required_parameter", f"{where}.name")
        parameters = tool.get("parameters")
        if tool.get("strict", True) and isinstance(parameters, dict) and \
                (violation := first_violation(parameters)):
            return Refusal(400, violation.message(str(tool["name"])), "invalid_function_parameters",
                           f"{where}.parameters")
    return None
