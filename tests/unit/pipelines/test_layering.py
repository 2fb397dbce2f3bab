"""pipelines/ is the domain: it must never import the runtime's packages."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pipelines
from tests.support.source import parse

FORBIDDEN = {"workers", "celery", "kombu", "sqlalchemy", "alembic", "redis", "openai", "aiohttp"}
PACKAGE = Path(pipelines.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_in_pipelines_imports_a_runtime_package() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imports(path) & FORBIDDEN)
        for path in PACKAGE.rglob("*.py")
        if _imports(path) & FORBIDDEN
    }
    assert offenders == {}


def test_importing_and_using_pipelines_loads_no_runtime_package() -> None:
    code = (
        "import sys, json, pipelines\n"
        "from pipelines.documents import read_bytes\n"
        "p = pipelines.get_pipeline('extract'); p.request('x'); p.version\n"
        "list(read_bytes('a.txt', b'hello', 'text/plain'))\n"
        "from pipelines.tokens import count_tokens; count_tokens('hello')\n"
        f"bad = {sorted(FORBIDDEN)!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_linter_contract_holds() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    assert f"{len(contracts)} kept, 0 broken" in result.stdout
