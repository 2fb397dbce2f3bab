"""Extract the part of OpenAI's OpenAPI specification that docpipe's conformance tests use.

The specification is ``openai/openai-openapi`` (MIT licence, copied beside the subset as
``LICENSE``). The subset keeps the operations docpipe calls (responses, input token counts,
files, batches), the schemas of their requests and answers, and every schema those refer to.
The batch output line (``BatchRequestOutput``) was dropped from the specification in June
2025; it is taken from the last commit that had it and converted from OpenAPI 3.0
(``nullable``) to 3.1.

Run from a clone of the repository::

    python tests/support/openapi/extract.py /path/to/openai-openapi \\
        > tests/support/openapi/subset.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import yaml

#: The commit the subset is taken from, and the last one with the batch line's schema.
COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
BATCH_LINE_COMMIT = "498c71ddf6f1c45b983f972ccabca795da211a3e"
OPERATIONS = [("/responses", "post"), ("/responses/input_tokens", "post"), ("/files", "post"),
              ("/files/{file_id}", "get"), ("/files/{file_id}/content", "get"),
              ("/batches", "post"), ("/batches/{batch_id}", "get"),
              ("/batches/{batch_id}/cancel", "post")]
#: Answer schemas the tests validate against by name, besides those the operations name.
SCHEMAS = ["Response", "ErrorResponse", "TokenCountsResource", "Batch", "OpenAIFile"]


def git_show(repo: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def refs(node: Any) -> set[str]:
    """The names of the components a node refers to, directly."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref.removeprefix("#/components/"))
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def closure(components: dict[str, Any], start: set[str]) -> dict[str, dict[str, Any]]:
    """Every component reachable from ``start`` (``kind/name`` strings), by kind."""
    kept: dict[str, dict[str, Any]] = {}
    todo = sorted(start)
    while todo:
        kind, name = todo.pop().split("/", 1)
        if name in kept.get(kind, {}):
            continue
        node = components[kind][name]
        kept.setdefault(kind, {})[name] = node
        todo.extend(sorted(refs(node)))
    return {kind: dict(sorted(nodes.items())) for kind, nodes in sorted(kept.items())}


def from_openapi30(node: Any) -> Any:
    """An OpenAPI 3.0 schema in 3.1's terms: ``nullable: true`` becomes a null alternative."""
    if isinstance(node, list):
        return [from_openapi30(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: from_openapi30(v) for k, v in node.items()
                 if k not in ("nullable", "x-oaiMeta")}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def subset(repo: str) -> dict[str, Any]:
    spec = json.loads(git_show(repo, COMMIT, "openapi.json"))
    paths: dict[str, dict[str, Any]] = {}
    for path, method in OPERATIONS:
        operation = {k: v for k, v in spec["paths"][path][method].items()
                     if k != "x-oaiMeta"}
        paths.setdefault(path, {})[method] = operation
    start = refs(paths) | {f"schemas/{name}" for name in SCHEMAS}
    components = closure(spec["components"], start)
    components["securitySchemes"] = spec["components"]["securitySchemes"]
    old = yaml.safe_load(git_show(repo, BATCH_LINE_COMMIT, "openapi.yaml"))
    components["schemas"]["BatchRequestOutput"] = from_openapi30(
        old["components"]["schemas"]["BatchRequestOutput"])
    return {
        "openapi": spec["openapi"],
        "info": {"title": "OpenAI API: the subset docpipe's conformance tests use",
                 "version": spec["info"]["version"],
                 "x-source": {"repository": "https://github.com/openai/openai-openapi",
                              "commit": COMMIT, "path": "openapi.json",
                              "batch_line_commit": BATCH_LINE_COMMIT, "licence": "MIT",
                              "extracted_by": "tests/support/openapi/extract.py"}},
        "servers": spec.get("servers", []),
        "security": spec.get("security", []),
        "paths": paths,
        "components": components,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", help="a clone of github.com/openai/openai-openapi")
    args = parser.parse_args()
    json.dump(subset(args.repo), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
