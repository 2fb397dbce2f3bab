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
    {"allOf", "not", "dependentRequired", "dependentSchemas", "if", "then", "else",
     "uniqueItems", "patternProperties"}
)
#: Nesting limit of the current structured-outputs guide.
MAX_NESTING = 10
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

    An empty list means the schema is acceptable with ``strict: true``.
    """
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("(root): the root must be an object")
    if "anyOf" in schema:
        problems.append("(root): the root must not be anyOf")
    for path, node, depth in _walk(schema, (), 0):
        where = "/".join(path) or "(root)"
        for keyword in sorted(UNSUPPORTED_KEYWORDS & node.keys()):
            problems.append(f"{where}: '{keyword}' is not permitted")
        if depth > MAX_NESTING:
            problems.append(f"{where}: {depth} levels of nesting exceeds limit of {MAX_NESTING}")
        if _is_object(node):
            if node.get("additionalProperties") is not False:
                problems.append(f"{where}: 'additionalProperties' must be supplied and be false")
            properties = node.get("properties", {})
            missing = [k for k in properties if k not in node.get("required", [])]
            if missing:
                problems.append(f"{where}: every property must be required; missing {missing}")
    return problems


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
