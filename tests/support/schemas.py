"""A corpus of strict-mode schemas, each with the verdict the Responses API gives it.

Written from the documented rules (``shared/reference/responses_api.md`` §1.2): every rule
and limit, at the limit and one past it. docpipe's lint and the simulator's validator must
both give every verdict here. ``patternProperties`` is left out: the guide refuses it only
for fine-tuned models, and docpipe's lint refuses it for every model, on purpose.
"""

from __future__ import annotations

from typing import Any

STRING: dict[str, Any] = {"type": "string"}


def obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A closed object requiring all of ``properties``."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False, **extra}


def nested(levels: int) -> dict[str, Any]:
    """A root whose deepest property sits ``levels`` levels down."""
    node: dict[str, Any] = STRING
    for _ in range(levels - 1):
        node = obj({"a": node})
    return obj({"a": node})


def properties(count: int, name_length: int = 6) -> dict[str, Any]:
    """A root of ``count`` string properties with names of ``name_length`` characters."""
    return obj({f"p{i:0{name_length - 1}d}": STRING for i in range(count)})


def names_totalling(chars: int) -> dict[str, Any]:
    """Property names whose lengths add up to ``chars`` (in 4,000 properties)."""
    count = 4000
    base, extra = divmod(chars, count)
    props = {f"{i:0{base + (1 if i < extra else 0)}d}": STRING for i in range(count)}
    assert sum(map(len, props)) == chars
    return obj(props)


def enum(values: int, length: int = 4) -> dict[str, Any]:
    """A root with one string enum of ``values`` values of ``length`` characters."""
    return obj({"e": {"type": "string", "enum": [f"{i:0{length}d}" for i in range(values)]}})


def long_enum(values: int, chars: int) -> dict[str, Any]:
    """One string enum of ``values`` values totalling ``chars`` characters."""
    base, extra = divmod(chars, values)
    options = [f"{i:0{base + (1 if i < extra else 0)}d}" for i in range(values)]
    assert sum(map(len, options)) == chars and len(set(options)) == values
    return obj({"e": {"type": "string", "enum": options}})


TREE = obj({"root": {"$ref": "#/$defs/node"}}, **{"$defs": {"node": obj({
    "label": STRING, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}})}})
LINKED = obj({"value": STRING, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}})

#: (id, schema, accepted by the API)
CORPUS: list[tuple[str, dict[str, Any], bool]] = [
    ("plain", obj({"name": STRING, "n": {"type": "integer"}}), True),
    ("nullable union", obj({"x": {"type": ["string", "null"]}}), True),
    ("anyOf nested", obj({"x": {"anyOf": [STRING, {"type": "null"}]}}), True),
    ("anyOf nested, a branch invalid", obj({"x": {"anyOf": [
        STRING, {"type": "object", "properties": {"y": STRING}}]}}), False),
    ("anyOf at the root", {"anyOf": [obj({"a": STRING}), obj({"b": STRING})]}, False),
    ("root not an object", {"type": "array", "items": STRING}, False),
    ("oneOf", obj({"x": {"oneOf": [STRING, {"type": "integer"}]}}), False),
    ("allOf", obj({"x": {"allOf": [STRING]}}), False),
    ("not", obj({"x": {"type": "string", "not": {"enum": ["a"]}}}), False),
    ("if/then/else", obj({"x": {"type": "string", "if": STRING, "then": STRING}}), False),
    ("uniqueItems", obj({"x": {"type": "array", "items": STRING, "uniqueItems": True}}),
     False),
    ("additionalProperties missing", {"type": "object", "properties": {"a": STRING},
                                      "required": ["a"]}, False),
    ("additionalProperties true", obj({"a": STRING}, additionalProperties=True), False),
    ("a property not required", obj({"a": STRING, "b": STRING}, required=["a"]), False),
    ("required names no property", obj({"a": STRING}, required=["a", "ghost"]), False),
    ("a property without type", obj({"a": {"description": "anything"}}), False),
    ("an enum without type", obj({"a": {"enum": ["x", "y"]}}), True),
    ("an unknown type", obj({"a": {"type": "text"}}), False),
    ("an array without items", obj({"a": {"type": "array"}}), False),
    ("string constraints", obj({"date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                                         "format": "date"}}), True),
    ("recursive $defs", TREE, True),
    ("recursion to the root", LINKED, True),
    ("$ref to a missing definition", obj({"a": {"$ref": "#/$defs/missing"}}), False),
    ("nesting at the limit (10)", nested(10), True),
    ("nesting one past (11)", nested(11), False),
    ("5,000 properties", properties(5000), True),
    ("5,001 properties", properties(5001), False),
    ("1,000 enum values", enum(1000), True),
    ("1,001 enum values", enum(1001), False),
    ("a 251-value enum of 15,000 characters", long_enum(251, 15_000), True),
    ("a 251-value enum of 15,001 characters", long_enum(251, 15_001), False),
    ("a 250-value enum of 20,000 characters", long_enum(250, 20_000), True),
    ("names of 120,000 characters", names_totalling(120_000), True),
    ("names of 120,001 characters", names_totalling(120_001), False),
]
