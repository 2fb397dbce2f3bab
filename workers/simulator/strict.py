"""The simulator's check of a strict ``json_schema``, written from the API's documented rules.

It shares no code with docpipe's own lint (``pipelines.schema``): two implementations held to
the same verdicts by one corpus of schemas, so a gap in either shows. The first violation
found is returned as the API words it: ``In context=(path...), rule``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: The documented limits of a strict schema.
MAX_PROPERTIES = 5000
MAX_DEPTH = 10
MAX_ENUM_VALUES = 1000
MAX_TOTAL_CHARS = 120_000
LONG_ENUM = 250
MAX_LONG_ENUM_CHARS = 15_000

_REFUSED = ("allOf", "not", "oneOf", "if", "then", "else", "dependentRequired",
            "dependentSchemas", "uniqueItems")
_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


@dataclass(frozen=True)
class Violation:
    """Where a schema breaks a rule, and the rule."""

    context: tuple[str, ...]
    rule: str

    def message(self, name: str) -> str:
        """The API's 400 message for a schema named ``name``."""
        return f"Invalid schema for response_format '{name}': In context={self.context}, " \
            f"{self.rule}."


@dataclass
class _Tally:
    properties: int = 0
    enum_values: int = 0
    chars: int = 0
    defs: set[str] = field(default_factory=set)


def first_violation(schema: Any) -> Violation | None:
    """The first rule of strict mode that ``schema`` breaks, or None."""
    return next(violations(schema), None)


def violations(schema: Any) -> Iterator[Violation]:
    """Every rule ``schema`` breaks, root rules first, then in document order, then limits."""
    if not isinstance(schema, dict):
        yield Violation((), "schema must be a JSON object")
        return
    if "anyOf" in schema:
        yield Violation((), "the root schema must not be 'anyOf'")
    if schema.get("type") != "object":
        yield Violation((), "the root schema must be of type 'object'")
    tally = _Tally()
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if isinstance(defs, dict):
            for name in defs:
                tally.defs.add(f"#/{key}/{name}")
                tally.chars += len(name)
    yield from _node(schema, (), 0, tally)
    if tally.properties > MAX_PROPERTIES:
        yield Violation((), f"{tally.properties} object properties exceeds the limit of "
                            f"{MAX_PROPERTIES}")
    if tally.enum_values > MAX_ENUM_VALUES:
        yield Violation((), f"{tally.enum_values} enum values exceeds the limit of "
                            f"{MAX_ENUM_VALUES}")
    if tally.chars > MAX_TOTAL_CHARS:
        yield Violation((), f"the total string length of property names, definition names, "
                            f"enum values and const values, {tally.chars}, exceeds the limit "
                            f"of {MAX_TOTAL_CHARS}")


def _node(node: Any, context: tuple[str, ...], depth: int, tally: _Tally
          ) -> Iterator[Violation]:
    if not isinstance(node, dict):
        yield Violation(context, "schema must be a JSON object")
        return
    if depth > MAX_DEPTH:
        yield Violation(context, f"{depth} levels of nesting exceeds limit of {MAX_DEPTH}")
        return
    for keyword in _REFUSED:
        if keyword in node:
            yield Violation(context, f"'{keyword}' is not permitted")
    if "$ref" in node:
        ref = node["$ref"]
        if ref != "#" and ref not in tally.defs:
            yield Violation(context, f"reference to component '{ref}' which was not found "
                                     "in the schema")
        return
    if "anyOf" in node:
        branches = node["anyOf"]
        if not isinstance(branches, list) or not branches:
            yield Violation(context, "'anyOf' must be a non-empty array")
            return
        for index, branch in enumerate(branches):
            yield from _node(branch, (*context, "anyOf", str(index)), depth, tally)
        return
    yield from _values(node, context, tally)
    if "type" not in node:
        if "enum" not in node and "const" not in node:
            yield Violation(context, "schema must have a 'type' key")
        return
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    if any(kind not in _TYPES for kind in kinds):
        yield Violation(context, f"type {node['type']!r} is not a valid type")
    if "object" in kinds:
        yield from _object(node, context, depth, tally)
    if "array" in kinds:
        if not isinstance(node.get("items"), dict):
            yield Violation(context, "array schema missing items")
        else:
            yield from _node(node["items"], (*context, "items"), depth + 1, tally)
    for key in ("$defs", "definitions"):
        for name, child in (node.get(key) or {}).items():
            yield from _node(child, (*context, key, name), 0, tally)


def _object(node: dict[str, Any], context: tuple[str, ...], depth: int, tally: _Tally
            ) -> Iterator[Violation]:
    if node.get("additionalProperties") is not False:
        yield Violation(context, "'additionalProperties' is required to be supplied and to "
                                 "be false")
    properties = node.get("properties", {})
    required = node.get("required")
    if not isinstance(required, list):
        required = []
    missing = [name for name in properties if name not in required]
    if missing:
        yield Violation(context, "'required' is required to be supplied and to be an array "
                                 f"including every key in properties. Missing '{missing[0]}'")
    extra = [name for name in required if name not in properties]
    if extra:
        yield Violation(context, f"'required' includes '{extra[0]}', which is not in "
                                 "properties")
    for name, child in properties.items():
        tally.properties += 1
        tally.chars += len(name)
        yield from _node(child, (*context, "properties", name), depth + 1, tally)


def _values(node: dict[str, Any], context: tuple[str, ...], tally: _Tally
            ) -> Iterator[Violation]:
    if "const" in node and isinstance(node["const"], str):
        tally.chars += len(node["const"])
    options = node.get("enum")
    if options is None:
        return
    if not isinstance(options, list):
        yield Violation(context, "'enum' must be an array")
        return
    tally.enum_values += len(options)
    strings = [o for o in options if isinstance(o, str)]
    size = sum(map(len, strings))
    tally.chars += size
    if len(strings) > LONG_ENUM and size > MAX_LONG_ENUM_CHARS:
        yield Violation(context, f"an enum of {len(strings)} string values totals {size} "
                                 f"characters, over the limit of {MAX_LONG_ENUM_CHARS} for "
                                 f"enums of more than {LONG_ENUM} values")
