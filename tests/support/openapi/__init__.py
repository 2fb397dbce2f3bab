"""The part of OpenAI's OpenAPI specification docpipe's conformance tests use, vendored.

``subset.json`` is extracted from ``openai/openai-openapi`` (MIT, ``LICENSE``) by
``extract.py``; its ``info.x-source`` names the commits. :func:`violations` validates an
answer against one of its schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET = Path(__file__).with_name("subset.json")
SPEC: dict[str, Any] = json.loads(SUBSET.read_text(encoding="utf-8"))
_URI = "urn:openai-openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _URI, Resource.from_contents(SPEC, default_specification=DRAFT202012))


def violations(schema: str, instance: Any) -> list[str]:
    """Where ``instance`` breaks the specification's schema ``schema`` (none: it conforms)."""
    validator = Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{schema}"},
                                     registry=_REGISTRY)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
            for e in validator.iter_errors(instance)]
