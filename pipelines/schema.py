"""Strict JSON schemas for Structured Outputs.

``to_strict_schema`` turns a Pydantic model into the subset of JSON Schema that the
Responses API accepts with ``strict: true``: every object closed with
``additionalProperties: false`` and every property required (optional values are
``null`` unions). ``strict_violations`` checks any schema against the same rules, so a
schema the API would reject is refused before the first call.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

#: Keywords the API rejects in strict mode.
UNSUPPORTED_KEYWORDS = frozenset(
    {"allOf", "not", "oneOf", "dependentRequired", "dependentSchemas", "if", "then", "else",
     "uniqueItems", "patternProperties"}
)
#: Nesting limit of the current structured-outputs guide.
MAX_NESTING = 10
#: The guide's other limits: properties, enum values, and characters of names and values.
MAX_PROPERTIES = 5000
MAX_ENUM_VALUES = 1000
MAX_SCHEMA_CHARS = 120_000
#: A string enum of more values than this may total at most MAX_LONG_ENUM_CHARS characters.
LONG_ENUM_VALUES = 250
MAX_LONG_ENUM_CHARS = 15_000
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
#: Keys pydantic emits that carry no meaning for the model and only cost tokens.
_NOISE_KEYS = ("title", "default")


def to_strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the strict JSON schema of ``model``.

    The transformation mirrors ``openai.lib._pydantic.to_strict_json_schema``: close every
    object, require every property, drop ``default``/``title`` noise and inline a ``$ref``
    that has sibling keys.
    """
    return strictify(model.model_json_schema())


def strictify(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a JSON schema into strict form (see :func:`to_strict_schema`)."""
    result: dict[str, Any] = _strictify(schema, schema.get("$defs", {}))
    return result


#: Keys whose value maps names to schemas (a property called "title" is not noise).
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


def _strictify(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_strictify(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _NOISE_KEYS}
    if "$ref" in node and len(node) > 1:
        ref = node.pop("$ref")
        target = defs[ref.rsplit("/", 1)[-1]]
        node = {**copy.deepcopy(target), **node}
    if node.get("type") == "object" or "properties" in node:
        node.setdefault("properties", {})
        node["additionalProperties"] = False
        node["required"] = list(node["properties"])
    if "allOf" in node and len(node["allOf"]) == 1:
        node.update(node.pop("allOf")[0])
    return {
        key: {name: _strictify(child, defs) for name, child in value.items()}
        if key in _SCHEMA_MAPS and isinstance(value, dict)
        else _strictify(value, defs)
        for key, value in node.items()
    }


def strict_violations(schema: dict[str, Any]) -> list[str]:
    """Every rule of strict mode that ``schema`` breaks, as ``"path: rule"`` strings.

    An empty list means the schema is acceptable with ``strict: true``. ``$ref`` is not
    followed (definitions are checked where they are defined), so recursive schemas are fine.
    """
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("(root): the root must be an object")
    if "anyOf" in schema:
        problems.append("(root): the root must not be anyOf")
    targets = {"#"} | {f"#/{key}/{name}" for key in ("$defs", "definitions")
                       for name in (schema.get(key) or {})}
    properties = enum_values = chars = 0
    chars += sum(len(name) for key in ("$defs", "definitions") for name in schema.get(key) or {})
    for path, node, depth in _walk(schema, (), 0):
        where = "/".join(path) or "(root)"
        problems += [f"{where}: {rule}" for rule in _node_problems(node, depth, targets)]
        names = node.get("properties", {}) if _is_object(node) else {}
        properties += len(names)
        chars += sum(map(len, names))
        values: list[Any] = node["enum"] if isinstance(node.get("enum"), list) else []
        enum_values += len(values)
        chars += sum(len(v) for v in values if isinstance(v, str))
        chars += len(node["const"]) if isinstance(node.get("const"), str) else 0
    if properties > MAX_PROPERTIES:
        problems.append(f"(root): {properties} properties exceed the limit of {MAX_PROPERTIES}")
    if enum_values > MAX_ENUM_VALUES:
        problems.append(f"(root): {enum_values} enum values exceed the limit of "
                        f"{MAX_ENUM_VALUES}")
    if chars > MAX_SCHEMA_CHARS:
        problems.append(f"(root): property and definition names, enum and const values total "
                        f"{chars} characters, over the limit of {MAX_SCHEMA_CHARS}")
    return problems


def _node_problems(node: dict[str, Any], depth: int, targets: set[str]) -> Iterator[str]:
    """The rules one schema node breaks, apart from the limits counted over the whole."""
    for keyword in sorted(UNSUPPORTED_KEYWORDS & node.keys()):
        yield f"'{keyword}' is not permitted"
    if depth > MAX_NESTING:
        yield f"{depth} levels of nesting exceeds limit of {MAX_NESTING}"
    if "$ref" in node:
        if node["$ref"] not in targets:
            yield f"$ref {node['$ref']!r} names no definition of the schema"
        return
    kinds = node.get("type")
    if kinds is None and not ({"anyOf", "enum", "const"} & node.keys()):
        yield "every schema needs a 'type' (or anyOf, enum or const)"
    elif kinds is not None and not set(kinds if isinstance(kinds, list) else [kinds]
                                       ) <= _JSON_TYPES:
        yield f"unknown type {kinds!r}"
    if kinds == "array" or isinstance(kinds, list) and "array" in kinds:
        if not isinstance(node.get("items"), dict):
            yield "an array needs 'items'"
    values = node.get("enum")
    if isinstance(values, list):
        strings = [v for v in values if isinstance(v, str)]
        total = sum(map(len, strings))
        if len(strings) > LONG_ENUM_VALUES and total > MAX_LONG_ENUM_CHARS:
            yield (f"a string enum of {len(strings)} values totals {total} characters, over "
                   f"the limit of {MAX_LONG_ENUM_CHARS} past {LONG_ENUM_VALUES} values")
    if _is_object(node):
        if node.get("additionalProperties") is not False:
            yield "'additionalProperties' must be supplied and be false"
        properties = node.get("properties", {})
        required = node.get("required", [])
        missing = [k for k in properties if k not in required]
        if missing:
            yield f"every property must be required; missing {missing}"
        unknown = [k for k in required if k not in properties]
        if unknown:
            yield f"required names what is not a property: {unknown}"


def _is_object(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def _walk(
    node: Any, path: tuple[str, ...], depth: int
) -> Iterator[tuple[tuple[str, ...], dict[str, Any], int]]:
    if not isinstance(node, dict):
        return
    yield path, node, depth
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, (*path, "properties", name), depth + 1)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key], (*path, key), depth + 1 if key == "items" else depth)
    for key in ("anyOf", "oneOf", "prefixItems"):
        for index, child in enumerate(node.get(key, []) or []):
            yield from _walk(child, (*path, key, str(index)), depth)
    for key in ("$defs", "definitions"):
        for name, child in (node.get(key) or {}).items():
            yield from _walk(child, (*path, key, name), 0)
