"""Reading docker-compose.yml as compose does: interpolation, merge keys, start order."""

from __future__ import annotations

import json
import re
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def variables(text: str) -> set[str]:
    """Names of the variables a compose file interpolates (``$$`` escapes excluded)."""
    return {m.group("name") for m in _VARIABLE.finditer(text.replace("$$", ""))}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Substitute variables the way compose does; a missing required one raises KeyError."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op and op.endswith("-") else ""

    parts = text.split("$$")
    return "$".join(_VARIABLE.sub(substitute, part) for part in parts)


def load(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with variables substituted and YAML merge keys applied."""
    data: dict[str, Any] = yaml.safe_load(interpolate(path.read_text(), env))
    return data


def start_order(services: dict[str, Any], profiles: tuple[str, ...] = ()) -> list[str]:
    """Services in an order compose may start them: each after what it depends on."""
    active = {name: spec for name, spec in services.items()
              if not spec.get("profiles") or set(spec["profiles"]) & set(profiles)}
    graph = {name: set(depends_on(spec)) & set(active) for name, spec in active.items()}
    # Stable: among services ready at once, keep the file's order.
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    position = {name: i for i, name in enumerate(active)}
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def depends_on(spec: dict[str, Any]) -> dict[str, str]:
    """The services ``spec`` waits for, with the condition it waits for on each."""
    depends = spec.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: cond.get("condition", "service_started") for name, cond in depends.items()}


def conditions(services: dict[str, Any]) -> dict[str, set[str]]:
    """For each service, the conditions others wait for on it."""
    wanted: dict[str, set[str]] = {name: set() for name in services}
    for spec in services.values():
        for name, condition in depends_on(spec).items():
            wanted.setdefault(name, set()).add(condition)
    return wanted


def is_docpipe(spec: dict[str, Any]) -> bool:
    """True for a service that runs the docpipe image (entrypoint ``docpipe``)."""
    return spec.get("image") == "docpipe:latest"


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def dashboard_metric_names() -> set[str]:
    """The docpipe_* series the Grafana dashboard queries."""
    dashboard = json.loads((ROOT / "workers/deploy/grafana/dashboards/docpipe.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    return set(re.findall(r"\b(docpipe_[a-z0-9_]+)", exprs))
