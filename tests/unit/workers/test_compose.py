"""docker-compose.yml, .env.example and the Prometheus/Grafana files, checked without Docker.

No Docker engine runs where these tests run, so the file is proven piece by piece here (every
variable is a setting or named in .env.example, every command parses with docpipe's CLI,
every mounted file exists) and as a whole by tests/e2e/test_compose_stack.py.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import click
import pytest
import typer
import yaml

from tests.support import compose
from tests.support.compose import dashboard_metric_names
from workers.cli import app
from workers.settings import Settings

ROOT = compose.ROOT
SETTINGS = {f"DOCPIPE_{name.upper()}" for name in Settings.model_fields
            if not name.startswith("openai_")} | {"OPENAI_API_KEY", "OPENAI_BASE_URL"}
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
EXAMPLE_NAMES = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, re.MULTILINE))
#: What a newcomer's .env holds: .env.example as it is, secrets and all.
FILLED = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.+)$", ENV_EXAMPLE, re.MULTILINE))


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from ``env`` the way a process reads them, JSON values included."""
    for key in env:
        monkeypatch.setenv(key, env[key])
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: dict[str, Any] = compose.load(FILLED)["services"]
    return data


def test_every_variable_the_file_uses_is_named_in_env_example() -> None:
    used = compose.variables(compose.COMPOSE_FILE.read_text())
    assert used - EXAMPLE_NAMES == set()
    # Every docpipe setting is documented there too, with its default.
    assert SETTINGS - EXAMPLE_NAMES == set()


def test_required_secrets_have_no_defaults() -> None:
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD",
                   "GRAFANA_PASSWORD"):
        env = {k: v for k, v in FILLED.items() if k != secret}
        with pytest.raises(KeyError, match=secret):
            compose.load(env)


def test_docpipe_environment_names_only_settings(services: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name, spec in services.items():
        if not compose.is_docpipe(spec):
            continue
        unknown = {key for key in compose.environment(spec) if key not in SETTINGS}
        assert unknown == set(), f"{name} sets {unknown}, which no setting reads"
        # And the values are valid for the settings they feed.
        with monkeypatch.context() as patch:
            settings_from({k: v for k, v in compose.environment(spec).items() if v}, patch)


def _command(spec: dict[str, Any]) -> list[str]:
    command = spec["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_every_docpipe_command_parses_with_the_cli(services: dict[str, Any]) -> None:
    cli = typer.main.get_command(app)
    seen = set()
    for name, spec in services.items():
        if not compose.is_docpipe(spec):
            continue
        argv = _command(spec)
        group: Any = cli
        args = list(argv)
        while isinstance(group, click.Group) and args and args[0] in group.commands:
            group = group.commands[args.pop(0)]
        assert not isinstance(group, click.Group) or not args, f"{name}: {argv} is no command"
        # Parsing checks every option name and value without running the command.
        group.make_context(argv[0], args, resilient_parsing=False)
        seen.add(argv[0])
    assert seen == {"db", "worker", "beat", "flower", "simulator"}


def test_healthchecks_and_start_conditions(services: dict[str, Any]) -> None:
    order = compose.start_order(services, profiles=("simulator",))
    assert order.index("migrate") > max(order.index("redis"), order.index("postgres"))
    wanted = compose.conditions(services)
    # What others wait for as healthy must have a healthcheck; migrate must end, not run.
    for name, conditions in wanted.items():
        if "service_healthy" in conditions:
            assert "healthcheck" in services[name], name
    assert wanted["migrate"] == {"service_completed_successfully"}
    assert services["migrate"]["restart"] == "no"
    for name in ("worker", "worker-nightly", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("worker", "worker-nightly", "flower"):
        assert services[name]["healthcheck"]["test"], name


def test_redis_is_durable_and_never_evicts(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "--requirepass" in command
    assert "redis-data:/data" in services["redis"]["volumes"]


def test_flower_credentials_stay_off_the_command_line(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert not {FILLED["FLOWER_USER"], FILLED["FLOWER_PASSWORD"]} & set(_command(flower))
    env = compose.environment(flower)
    assert env["DOCPIPE_FLOWER_USER"] == FILLED["FLOWER_USER"]
    assert env["DOCPIPE_FLOWER_PASSWORD"] == FILLED["FLOWER_PASSWORD"]
    # Published on the host's loopback only.
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_workers_export_metrics_that_prometheus_scrapes(services: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "workers/deploy/prometheus.yml").read_text())
    targets = {target for job in config["scrape_configs"] for group in job["static_configs"]
               for target in group["targets"]}
    for name in ("worker", "worker-nightly"):
        port = compose.environment(services[name])["DOCPIPE_METRICS_PORT"]
        assert f"{name}:{port}" in targets
    assert f"flower:{compose.environment(services['flower'])['DOCPIPE_FLOWER_PORT']}" in targets


def test_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    build = services["worker"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    for package in ("pipelines", "workers", "migrations"):
        assert f"COPY {package} " in dockerfile


def test_grafana_dashboard_uses_the_provisioned_datasource() -> None:
    deploy = ROOT / "workers/deploy/grafana"
    datasource = yaml.safe_load((deploy / "provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((deploy / "dashboards/docpipe.json").read_text())
    assert dashboard["uid"] == "docpipe" and len(dashboard["panels"]) >= 10
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])




def test_dashboard_names_series_docpipe_defines() -> None:
    from prometheus_client import CollectorRegistry

    from workers.ops import metrics

    registry = CollectorRegistry()
    for collector in (metrics.CALLS, metrics.CALL_LATENCY, metrics.TOKENS, metrics.COST,
                      metrics.RATE_LIMITED, metrics.IN_FLIGHT, metrics.LIMITER_WAIT,
                      metrics.PARKED, metrics.OUTCOMES):
        registry.register(collector)
    defined = {sample_name for family in registry.collect() for sample_name in
               (family.name, f"{family.name}_total", f"{family.name}_bucket")}
    defined |= {"docpipe_items", "docpipe_runs", "docpipe_queue_depth", "docpipe_queue_unacked"}
    assert dashboard_metric_names() - defined == set()


def test_env_example_defaults_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Uncommented, every default it shows is a valid value, and is the default.
    lines = [line.lstrip("#") for line in ENV_EXAMPLE.splitlines()
             if re.match(r"^#?DOCPIPE_[A-Z0-9_]+=.", line)]
    values = {k: v for k, v in (line.split("=", 1) for line in lines) if k in SETTINGS}
    assert len(values) > 30
    assert settings_from(values, monkeypatch) == Settings(_env_file=None)  # type: ignore[call-arg]


def test_grafana_finds_the_dashboard_where_compose_mounts_it(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    inside = mounts["./workers/deploy/grafana/dashboards"]
    provider = yaml.safe_load(
        (ROOT / "workers/deploy/grafana/provisioning/dashboards/docpipe.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == inside
    home = compose.environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(inside + "/")
    assert (ROOT / "workers/deploy/grafana/dashboards" / home.rsplit("/", 1)[1]).exists()
    assert mounts["./workers/deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
