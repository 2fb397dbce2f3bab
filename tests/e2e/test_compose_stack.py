"""docker-compose.yml, run on the host: each docpipe service's command, in compose order.

No Docker engine runs here, so the stack is brought up the way compose would bring it up, with
the file's own commands, environments and healthchecks. Redis (with its password) and
PostgreSQL are local servers standing in for their images; host names and ports are
rewritten to them. Prometheus and Grafana have no binaries here: their files are checked in
tests/unit/workers/test_compose.py, and every series the dashboard queries is checked
against a real worker's scrape below.

Then documents go through the live worker (``ingest --wait``) and the nightly prefork
worker, and the tests look at the stack the way an operator would: Flower's API and a
screenshot of its dashboard, each worker's /metrics, JSON logs, ``status --watch``, and the
HTML report rendered in headless Chromium.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from tests.conftest import CHROMIUM_MISSING, unavailable
from tests.support import compose
from tests.support.compose import dashboard_metric_names
from tests.support.services import RedisServer, docpipe_argv
from tests.support.waiting import wait_until
from workers.db import repository as repo
from workers.db.models import Attempt
from workers.db.session import session_scope
from workers.runtime.embedded import free_port, stop

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(os.environ.get("DOCPIPE_TEST_ARTIFACTS", compose.ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOST = socket.gethostname()
#: Services whose images stand for servers the tests run themselves, or not at all.
PROVIDED = {"redis", "postgres"}
NOT_ON_HOST = {"prometheus", "grafana"}
FLOWER_USER, FLOWER_PASSWORD = "ops", f"pw-{uuid.uuid4().hex[:12]}"
#: The nightly run's messages and a nightly pool process's slots: 12 documents fill three.
NIGHTLY_GROUP = 4


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    log_path: Path
    #: Seconds one healthcheck may take (compose's ``timeout``).
    health_timeout: float = 30.0
    process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ComposeStack:
    database_url: str
    env: dict[str, str]
    order: list[str] = field(default_factory=list)
    healthy: list[str] = field(default_factory=list)
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    ingest_output: str = ""

    def cli(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(docpipe_argv(*args), env=self.env | (env or {}),
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"docpipe {args}: {result.stdout}\n{result.stderr}"
        return result

    def flower(self, path: str, *, auth: tuple[str, str] | None = (FLOWER_USER, FLOWER_PASSWORD)
               ) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports['flower']}{path}")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def scrape(self, service: str) -> dict[str, list[Any]]:
        url = f"http://127.0.0.1:{self.ports[service + ':metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(text):
            samples.setdefault(f"family:{family.name}", [])
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples


def _rewrite(value: str, stack: dict[str, str]) -> str:
    """Point a compose value at the host's servers instead of the compose network's."""
    for old, new in stack.items():
        value = value.replace(old, new)
    return value


def _seconds(duration: str) -> float:
    """A compose duration such as ``15s`` or ``1m``, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number = duration.rstrip("mshd")
    return float(number) * units[duration[len(number):]]


def _healthy(service: Service) -> bool:
    """One run of the service's healthcheck; past its timeout it failed, as in compose."""
    assert service.healthcheck is not None
    kind, *rest = service.healthcheck
    argv = ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
    try:
        result = subprocess.run(argv, env=service.env, capture_output=True,
                                timeout=service.health_timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _start(stack: ComposeStack, spec: dict[str, Any], name: str, tmp: Path,
           rewrites: dict[str, str]) -> Service:
    command = spec["command"]
    command = shlex.split(command) if isinstance(command, str) else list(command)
    env = dict(stack.env)
    for key, value in compose.environment(spec).items():
        env[key] = _rewrite(value, rewrites)
    argv = [_rewrite(arg, rewrites) for arg in command]
    if name == "simulator":  # its published port, on the host
        argv[argv.index("--port") + 1] = str(stack.ports["simulator"])
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--latency-ms") + 1] = "40,200"
        argv += ["--rate-limit-rate", "0.2"]  # some 429s, for the metrics and the report
    if "DOCPIPE_METRICS_PORT" in env:
        stack.ports[f"{name}:metrics"] = port = free_port()
        env["DOCPIPE_METRICS_PORT"] = str(port)
    if "DOCPIPE_FLOWER_PORT" in env:
        env["DOCPIPE_FLOWER_PORT"] = str(stack.ports["flower"])
    for key in ("DOCPIPE_METRICS_ADDRESS", "DOCPIPE_FLOWER_ADDRESS"):
        if env.get(key) == "0.0.0.0":
            env[key] = "127.0.0.1"
    if "DOCPIPE_BEAT_SCHEDULE_FILE" in env:
        env["DOCPIPE_BEAT_SCHEDULE_FILE"] = str(tmp / "beat" / "celerybeat-schedule")
    if name == "flower":  # its published port, on the host
        rewrites = rewrites | {"127.0.0.1:5555": f"127.0.0.1:{stack.ports['flower']}"}
    check = spec.get("healthcheck", {}).get("test")
    health = [_rewrite(part.replace("$$", "$"), rewrites) for part in check] if check else None
    service = Service(name, docpipe_argv(*argv), env, health, tmp / f"{name}.log",
                      health_timeout=_seconds(spec.get("healthcheck", {}).get("timeout", "30s")))
    return service


@pytest.fixture(scope="module")
def compose_stack(postgres_server: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ComposeStack]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    tmp = tmp_path_factory.mktemp("compose")
    # PostgreSQL: a database of this test's own on the session's server, as user docpipe.
    name = f"compose_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    pg_password = postgres_server.split(":")[2].split("@")[0]
    pg_hostport = postgres_server.split("@")[1].rsplit("/", 1)[0]
    # Redis: with a password, AOF and noeviction, as compose's redis service runs.
    redis_password = uuid.uuid4().hex
    redis = RedisServer(free_port(), tmp / "redis", password=redis_password, fsync="everysec")
    redis.start()
    variables = {
        "POSTGRES_PASSWORD": pg_password, "REDIS_PASSWORD": redis_password,
        "FLOWER_USER": FLOWER_USER, "FLOWER_PASSWORD": FLOWER_PASSWORD,
        "GRAFANA_PASSWORD": "unused", "OPENAI_API_KEY": "sk-compose-e2e",
        # Small for a 2-core test machine; compose's defaults are 256 and 8.
        "DOCPIPE_WORKER_CONCURRENCY": "8", "DOCPIPE_NIGHTLY_CONCURRENCY": "2",
    }
    ports = {"flower": free_port(), "simulator": free_port()}
    variables["OPENAI_BASE_URL"] = f"http://127.0.0.1:{ports['simulator']}/v1"
    services: dict[str, Any] = compose.load(variables)["services"]
    # Its message is acknowledged once its calls are sent, so one pool process could take
    # every message of 12 documents in one group of 16. In groups of 4 (a process's slots),
    # a process with its calls out is busy, and the next message goes to the other.
    services["worker-nightly"]["environment"]["DOCPIPE_GROUP_SIZE"] = str(NIGHTLY_GROUP)
    rewrites = {"@postgres:5432/docpipe": f"@{pg_hostport}/{name}",
                "@redis:6379/": f"@127.0.0.1:{redis.port}/"}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_")}
    # The healthcheck's $HOSTNAME is the container's host name, which %h expands to.
    base_env |= {"HOSTNAME": HOST, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    database_url = _rewrite(
        compose.environment(services["worker"])["DOCPIPE_DATABASE_URL"], rewrites)
    stack = ComposeStack(database_url, base_env, ports=ports)
    stack.env |= {"DOCPIPE_DATABASE_URL": database_url, "DOCPIPE_BROKER_URL": _rewrite(
        compose.environment(services["worker"])["DOCPIPE_BROKER_URL"], rewrites),
        "OPENAI_API_KEY": variables["OPENAI_API_KEY"],
        "OPENAI_BASE_URL": variables["OPENAI_BASE_URL"]}
    stack.order = compose.start_order(services, profiles=("simulator",))
    wanted = compose.conditions(services)
    try:
        # As compose does: a service starts once what it depends on has started, become
        # healthy or completed, as its depends_on asks; the others start side by side.
        for service_name in stack.order:
            if service_name in PROVIDED or service_name in NOT_ON_HOST:
                continue
            for dependency, condition in compose.depends_on(services[service_name]).items():
                if condition == "service_healthy" and dependency in stack.services:
                    _wait_healthy(stack, stack.services[dependency])
            service = _start(stack, services[service_name], service_name, tmp, rewrites)
            stack.services[service_name] = service
            if "service_completed_successfully" in wanted[service_name]:
                result = subprocess.run(service.argv, env=service.env, capture_output=True,
                                        text=True, timeout=120)
                assert result.returncode == 0, f"{service_name}: {result.stderr}"
                continue
            log = open(service.log_path, "ab")
            service.process = subprocess.Popen(service.argv, env=service.env, stdout=log,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True, cwd=tmp)
        for service in stack.services.values():
            if service.healthcheck is not None:
                _wait_healthy(stack, service)
        wait_until(lambda: _port_open(ports["simulator"]), timeout=30, what="simulator")
        _run_documents(stack, tmp)
        yield stack
    except BaseException:
        for service in stack.services.values():
            sys.stderr.write(f"--- {service.name}\n{service.log()[-4000:]}\n")
        raise
    finally:
        for service_name in reversed(stack.order):
            service = stack.services.get(service_name)
            if service is not None and service.process is not None:
                stop(service.process, timeout=30)
        redis.stop()
        from workers.db.session import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _wait_healthy(stack: ComposeStack, service: Service) -> None:
    if service.name in stack.healthy:
        return
    assert service.process is not None
    wait_until(lambda: service.process is not None and service.process.poll() is None
               and _healthy(service), timeout=150, interval=0.5,
               what=f"{service.name} healthy")
    stack.healthy.append(service.name)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _documents(folder: Path, count: int, tag: str) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{tag}-{i:03d}.txt").write_text(
            f"{tag} report {i}. " + "The quarterly figures for Vienna and Munich rose. " * (5 + i))
    return folder


def _run_documents(stack: ComposeStack, tmp: Path) -> None:
    live = stack.cli("ingest", str(_documents(tmp / "live-docs", 24, "live")), "--wait",
                     timeout=180)
    stack.ingest_output = live.stdout
    nightly = stack.cli("ingest", str(_documents(tmp / "nightly-docs", 12, "nightly")),
                        "--queue", "docpipe.nightly", "--pipeline", "extract", "--json",
                        env={"DOCPIPE_GROUP_SIZE": str(NIGHTLY_GROUP)})
    nightly_run = json.loads(nightly.stdout)["run_id"]
    with session_scope(stack.database_url) as session:
        runs = [r.id for r in repo.list_runs(session)]
    stack.runs = {"live": min(runs), "nightly": nightly_run}

    def finished() -> bool:
        with session_scope(stack.database_url) as session:
            report = repo.run_report(session, nightly_run)
        return report is not None and report.status == "finished"

    wait_until(finished, timeout=120, what="the nightly run to finish")


def _report(stack: ComposeStack, run: str) -> repo.RunReport:
    with session_scope(stack.database_url) as session:
        report = repo.run_report(session, stack.runs[run])
    assert report is not None
    return report


def _chromium() -> str:
    """Chromium, which pip cannot install: missing, the test is skipped (failed in CI), and
    the end of the run names the command that installs it."""
    if CHROMIUM is None:
        unavailable(CHROMIUM_MISSING)
    assert CHROMIUM is not None
    return CHROMIUM


def _screenshot(url: str, path: Path, tmp: Path, *, wait_ms: int = 3000) -> Image.Image:
    chromium = _chromium()
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium'}",
         "--window-size=1400,1000", f"--virtual-time-budget={wait_ms}",
         f"--screenshot={path}", url],
        capture_output=True, text=True, timeout=120)
    assert path.exists(), result.stderr[-2000:]
    return Image.open(path)


def _dom(url: str, tmp: Path, *, wait_ms: int = 3000) -> str:
    chromium = _chromium()
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp / 'chromium-dom'}",
         f"--virtual-time-budget={wait_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    return result.stdout


def _not_blank(image: Image.Image) -> None:
    stat = ImageStat.Stat(image.convert("L"))
    assert image.size[0] >= 1000 and stat.stddev[0] > 10, (image.size, stat.stddev)


# -- the stack --------------------------------------------------------------------------------


def test_services_start_in_compose_order_and_pass_their_healthchecks(
        compose_stack: ComposeStack) -> None:
    order = compose_stack.order
    assert order.index("migrate") < min(order.index(s) for s in
                                        ("worker", "worker-nightly", "beat", "flower"))
    assert set(compose_stack.services) == {"migrate", "worker", "worker-nightly", "beat",
                                           "flower", "simulator"}
    # The healthchecks that compose runs (celery inspect ping, Flower's /healthcheck) ran
    # here, against these processes, and passed.
    assert set(compose_stack.healthy) == {"worker", "worker-nightly", "flower"}
    for service in compose_stack.services.values():
        if service.process is not None:
            assert service.process.poll() is None, f"{service.name} exited:\n{service.log()}"


def test_documents_flow_through_the_live_and_nightly_workers(
        compose_stack: ComposeStack) -> None:
    live, nightly = _report(compose_stack, "live"), _report(compose_stack, "nightly")
    assert (live.status, live.succeeded, live.failed) == ("finished", 24, 0)
    assert (nightly.status, nightly.succeeded, nightly.failed) == ("finished", 12, 0)
    # ingest --wait showed the live view to the end.
    assert "24/24" in compose_stack.ingest_output and "items/s" in compose_stack.ingest_output
    # The nightly run's calls were made by the prefork worker's pool processes.
    main = compose_stack.services["worker-nightly"].process
    assert main is not None
    callers = _callers(compose_stack, "nightly")
    assert callers and all(not caller.endswith(f":{main.pid}") for caller in callers)


def _callers(stack: ComposeStack, run: str) -> set[str]:
    """The ``host:pid`` of each process that made a call of the run."""
    with session_scope(stack.database_url) as session:
        return {str(w) for w in session.scalars(
            select(Attempt.worker).where(Attempt.run_id == stack.runs[run]))}


# -- Flower -----------------------------------------------------------------------------------


def test_flower_sees_workers_tasks_and_queues(compose_stack: ComposeStack) -> None:
    def workers_online() -> dict[str, Any]:
        found: dict[str, Any] = compose_stack.flower("/api/workers?refresh=1")
        return found if {f"live@{HOST}", f"nightly@{HOST}"} <= set(found) else {}

    workers = wait_until(workers_online, timeout=30, what="Flower to list both workers")
    assert {workers[f"live@{HOST}"]["active_queues"][i]["name"]
               for i in range(len(workers[f"live@{HOST}"]["active_queues"]))} == \
        {"docpipe.live", "docpipe.control"}
    tasks = compose_stack.flower("/api/tasks?limit=1000")
    processed = [t for t in tasks.values() if t["name"] == "docpipe.items.process"]
    # A task carries a group of items: together they carried every item, at least once.
    carried = [v for t in processed for v in t["args"].strip("[](),").split(",")]
    assert len(carried) >= 36
    # Arguments are item ids, never documents or keys.
    for value in carried:
        assert value.strip().isdigit(), processed
    assert {t["state"] for t in processed} == {"SUCCESS"}
    queues = {q["name"]: q["messages"] for q in
              compose_stack.flower("/api/queues/length")["active_queues"]}
    assert {"docpipe.live", "docpipe.nightly", "docpipe.control"} <= set(queues)
    assert queues["docpipe.live"] == 0 and queues["docpipe.nightly"] == 0


@pytest.mark.parametrize("auth", [None, (FLOWER_USER, "wrong"), ("intruder", FLOWER_PASSWORD)])
def test_flower_refuses_requests_without_its_credentials(compose_stack: ComposeStack,
                                                         auth: tuple[str, str] | None) -> None:
    for path in ("/api/workers", "/api/tasks", "/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            compose_stack.flower(path, auth=auth)
        assert refused.value.code == 401


def test_flower_dashboard_screenshot(compose_stack: ComposeStack, tmp_path: Path) -> None:
    url = f"http://{FLOWER_USER}:{FLOWER_PASSWORD}@127.0.0.1:{compose_stack.ports['flower']}/"
    dom = _dom(url, tmp_path)
    assert f"live@{HOST}" in dom and f"nightly@{HOST}" in dom, dom[:2000]
    image = _screenshot(url, ARTIFACTS / "flower-dashboard.png", tmp_path)
    _not_blank(image)


# -- metrics, logs, live view, report ---------------------------------------------------------


def _total(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items()))


def test_worker_metrics_match_the_database(compose_stack: ComposeStack) -> None:
    live, nightly = _report(compose_stack, "live"), _report(compose_stack, "nightly")
    for service, report in (("worker", live), ("worker-nightly", nightly)):
        samples = compose_stack.scrape(service)
        assert _total(samples, "docpipe_calls_total") == report.attempts
        assert _total(samples, "docpipe_calls_total", outcome="ok") == \
            report.attempts_by_outcome["ok"]
        assert _total(samples, "docpipe_calls_total", error_class="rate_limited") == \
            _total(samples, "docpipe_http_429_total", kind="rate_limited") == \
            report.rate_limited
        assert _total(samples, "docpipe_tokens_total", kind="input") == report.input_tokens
        assert _total(samples, "docpipe_tokens_total", kind="output") == report.output_tokens
        assert _total(samples, "docpipe_cost_usd_total") == pytest.approx(
            float(report.cost_usd), rel=1e-6)
        assert _total(samples, "docpipe_call_duration_seconds_count") == report.attempts
        assert _total(samples, "docpipe_limiter_wait_seconds_count") == report.attempts
        assert _total(samples, "docpipe_calls_in_flight") == 0
        queue = "docpipe.live" if service == "worker" else "docpipe.nightly"
        assert _total(samples, "docpipe_item_deliveries_total", queue=queue,
                      outcome="succeeded") == report.total
        assert _total(samples, "docpipe_item_deliveries_total", queue=queue,
                      outcome="retry") >= report.rate_limited
        # Fleet gauges, read at scrape time: nothing queued, both runs finished.
        depth = {s.labels["queue"]: s.value for s in samples["docpipe_queue_depth"]}
        assert depth == {"docpipe.live": 0, "docpipe.nightly": 0, "docpipe.control": 0}
        runs = {s.labels["status"]: s.value for s in samples["docpipe_runs"]}
        assert runs == {"finished": 2}
    # The nightly worker is prefork: the figures above summed its pool processes' files.
    assert len(_callers(compose_stack, "nightly")) == 2
    assert live.rate_limited + nightly.rate_limited > 0, "the simulator answers 20% with 429"
    # Every series the Grafana dashboard queries is one a worker serves. (A counter appears
    # once it has counted: items parked for long waits need a configured budget.)
    served = set(compose_stack.scrape("worker")) | set(compose_stack.scrape("worker-nightly"))
    served |= {name.removeprefix("family:") for name in served}
    assert dashboard_metric_names() - served <= {"docpipe_items_parked_total"}


def test_workers_log_json_lines_with_item_context(compose_stack: ComposeStack) -> None:
    records = []
    for name in ("worker", "worker-nightly"):
        for line in compose_stack.services[name].log().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    assert records, "compose runs the workers with DOCPIPE_LOG_FORMAT=json"
    succeeded = [r for r in records if r.get("message") == "item succeeded"]
    assert len(succeeded) == 36
    limited = [r for r in records if r.get("message", "").startswith("item call failed")]
    assert all(r["request_id"] and r["item_id"] for r in limited)
    for record in succeeded:
        assert {"run_id", "item_id", "request_id", "attempt", "time", "level"} <= set(record)
        assert record["request_id"].startswith("req_")
    assert {r["run_id"] for r in succeeded} == set(compose_stack.runs.values())


def test_status_watch_shows_the_finished_run(compose_stack: ComposeStack) -> None:
    result = compose_stack.cli("status", str(compose_stack.runs["live"]), "--watch",
                               "--interval", "0.2", timeout=60)
    out = result.stdout
    for expected in ("run", "finished", "24/24", "items/s", "eta", "so far", "projected",
                     "429s", "errors"):
        assert expected in out, (expected, out)


def test_run_report_renders_in_chromium(compose_stack: ComposeStack, tmp_path: Path) -> None:
    path = ARTIFACTS / "run-report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    compose_stack.cli("report", str(compose_stack.runs["live"]), "-o", str(path))
    html = path.read_text()
    assert html.count("<svg") == 4
    for title in ("Throughput", "Call latency", "Tokens and cost", "Errors by class",
                  "Slowest documents", "Most expensive documents", "Configuration"):
        assert title in html
    # Self-contained: nothing fetched from anywhere.
    assert "http://" not in html.replace("http://www.w3.org/", "") and "https://" not in html
    assert 'src="' not in html and "<link" not in html
    dom = _dom(path.as_uri(), tmp_path, wait_ms=500)
    assert "Run " in dom and "live-0" in dom
    image = _screenshot(path.as_uri(), ARTIFACTS / "run-report.png", tmp_path, wait_ms=500)
    _not_blank(image)
