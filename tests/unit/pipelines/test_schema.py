from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipelines import EXTRACT, SUMMARISE
from pipelines.schema import strict_violations, strictify


def _objects(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found.extend(_objects(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_objects(value))
    return found


names = st.sampled_from(["title", "default", "name", "items", "type", "a", "b", "value"])
leaves = st.sampled_from([
    {"type": "string"}, {"type": "integer"}, {"type": "number", "title": "N"},
    {"type": "boolean", "default": False}, {"anyOf": [{"type": "string"}, {"type": "null"}]},
])
schemas = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda props: {"type": "object", "title": "T", "properties": props},
                  st.dictionaries(names, children, min_size=1, max_size=4)),
        st.builds(lambda item: {"type": "array", "items": item}, children),
    ),
    max_leaves=12,
)
roots = st.builds(lambda props: {"type": "object", "properties": props},
                  st.dictionaries(names, schemas, min_size=1, max_size=5))


class TestStrictify:
    @given(roots)
    def test_every_object_is_closed_and_requires_all_its_properties(self, schema: dict[str, Any]
                                                                    ) -> None:
        strict = strictify(schema)
        for node in _objects(strict):
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
        assert strict_violations(strict) == []

    @given(roots)
    def test_keeps_every_property_even_one_named_like_a_keyword(self, schema: dict[str, Any]
                                                               ) -> None:
        assert list(strictify(schema)["properties"]) == list(schema["properties"])

    def test_builtin_pipelines_are_strict(self) -> None:
        for pipeline in (SUMMARISE, EXTRACT):
            assert strict_violations(pipeline.schema) == []
            assert "title" not in pipeline.schema
        assert set(EXTRACT.schema["properties"]) == {
            "document_type", "title", "date", "parties", "entities", "amounts", "key_facts"}
        assert set(SUMMARISE.schema["properties"]) == {"summary", "key_points", "topics",
                                                       "language"}


class TestViolations:
    def test_reports_path_and_rule(self) -> None:
        schema = {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                "inner": {"type": "object", "properties": {"x": {"type": "string"}},
                          "required": [], "additionalProperties": False},
            },
            "required": ["tags", "inner"],
        }
        problems = strict_violations(schema)
        assert "(root): 'additionalProperties' must be supplied and be false" in problems
        assert "properties/tags: 'uniqueItems' is not permitted" in problems
        assert "properties/inner: every property must be required; missing ['x']" in problems

    def test_rejects_non_object_root_and_deep_nesting(self) -> None:
        assert strict_violations({"type": "array"})[0].startswith("(root)")
        node: dict[str, Any] = {"type": "string"}
        for _ in range(12):
            node = {"type": "object", "properties": {"n": node}, "required": ["n"],
                    "additionalProperties": False}
        assert any("levels of nesting" in p for p in strict_violations(node))
