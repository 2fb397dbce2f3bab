"""The long-running processes: worker, beat, Flower and the simulator."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.app import app, err, migrated, settings
from workers.errors import ConfigurationError

#: prometheus-client's multiprocess folder (not imported from workers.ops.metrics, which would
#: import prometheus-client before the variable is set).
PROMETHEUS_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@app.command("beat", short_help="Run Celery beat: the reconciler and the schedules.")
def beat_cmd() -> None:
    """Run Celery beat: the reconciler every few seconds, and the configured schedules.

    Run exactly one per fleet. Its state file (DOCPIPE_BEAT_SCHEDULE_FILE) survives
    restarts, so a restart neither skips nor repeats a nightly run.
    """
    current = migrated(settings())
    from workers.runtime.celery_app import app as celery_app

    current.beat_schedule_file.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--schedule", str(current.beat_schedule_file),
                      "--loglevel", "INFO"])


@app.command("worker", short_help="Run docpipe's workers: Celery, a process per core.",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker_cmd(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option(
        "--queues", "-Q", metavar="QUEUE,...", help="Queues to consume, comma-separated.")] =
    "docpipe.live,docpipe.nightly,docpipe.control",
    beat: Annotated[bool, typer.Option(
        "--beat", help="Also run beat (the reconciler) in this worker: for one-machine setups. "
        "Run exactly one beat per fleet.")] = False,
) -> None:
    """Run docpipe's workers: one process per core (DOCPIPE_WORKER_PROCESSES), each a
    Celery worker whose event loop keeps DOCPIPE_WORKER_CONCURRENCY calls in flight.
    Extra options go to celery worker."""
    current = migrated(settings())
    if current.openai_api_key is None:  # here, before any process starts to say it
        raise ConfigurationError("OPENAI_API_KEY is not set: workers cannot call the API; "
                                 "set it (or DOCPIPE_OPENAI_API_KEY) and start them again")
    from workers.runtime import processes

    supervised = os.environ.get(processes.CHILD_ENV) == "1" and \
        PROMETHEUS_MULTIPROC_ENV in os.environ
    if current.metrics_port is not None and not supervised:
        # Before anything imports prometheus-client, which reads this once: each process
        # (pool processes, or the engine processes started below) then writes its own
        # metric files there, and one process serves their sum.
        os.environ[PROMETHEUS_MULTIPROC_ENV] = str(_fresh_metrics_dir(current.metrics_dir))
    if current.processes > 1 and current.worker_pool == "threads":
        raise typer.Exit(processes.supervise(
            [*processes.own_command(), "worker", "--queues", queues], ctx.args,
            count=current.processes, beat=["--beat"] if beat else [],
            env=dict(os.environ)))
    from workers.runtime import liveness
    from workers.runtime.celery_app import app as celery_app

    if beat:
        current.beat_schedule_file.parent.mkdir(parents=True, exist_ok=True)
    argv = ["worker", "--pool", current.worker_pool, "--concurrency",
            str(current.pool_concurrency), "-Q", queues, "-E", "--loglevel", "INFO",
            *(["--beat", "--schedule", str(current.beat_schedule_file)] if beat else []),
            *ctx.args]
    # app.start rather than worker_main, which drops the exit code: a worker that Celery gave
    # up on must not exit 0, or no supervisor restarts it.
    code: int | None = celery_app.start(argv)
    liveness.restart_after_crash(code)
    raise typer.Exit(int(code or 0))


def _fresh_metrics_dir(base: Path | None) -> Path:
    """An empty folder for this worker's metric files: stale ones would add old counts."""
    if base is None:
        path = Path(tempfile.mkdtemp(prefix="docpipe-metrics-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        return path
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    return base


@app.command("flower", short_help="Run Flower for docpipe's broker, with basic auth.")
def flower_cmd(
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Run Flower with no login, allowed only on a loopback address.")]
    = False,
) -> None:
    """Run Flower for docpipe's broker: basic auth, bounded task memory, events on.

    Credentials come from DOCPIPE_FLOWER_USER and DOCPIPE_FLOWER_PASSWORD; without them
    Flower starts only on loopback, and only with --no-auth.
    """
    current = settings()
    from workers.ops.flower import launch

    plan = launch(current, allow_no_auth_on_loopback=no_auth)
    os.environ.update(plan.environ)
    # Flower's own /metrics is one process: it must not write a worker's metric files.
    os.environ.pop(PROMETHEUS_MULTIPROC_ENV, None)
    if not plan.authenticated:
        err.print(f"[yellow]Flower has no login; it listens on {current.flower_address} "
                  "only[/yellow]")
    from workers.runtime.celery_app import app as celery_app

    raise typer.Exit(int(celery_app.start(plan.argv) or 0))


@app.command("simulator", short_help="Serve the Responses API simulator (a test tool).")
def simulator_cmd(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8700,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    rpm: Annotated[int | None, typer.Option(help="Requests per minute limit.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute limit.")] = None,
    limit_window_seconds: Annotated[float, typer.Option(
        help="Seconds of each limit let through at once (60: a minute's burst; less plays "
        "an API that enforces its limits over shorter periods).")] = 60.0,
    latency_ms: Annotated[str, typer.Option(
        help="Median latency in ms, or MEDIAN,P99 for a heavy (log-normal) tail.")] = "50",
    seed: Annotated[int, typer.Option(help="Random seed for latency and faults.")] = 0,
    latency_per_input: Annotated[bool, typer.Option(
        "--latency-per-input", help="Give the same document the same latency, whoever sends "
        "it in whatever order (for comparing two clients on one corpus).")] = False,
    fail_rate: Annotated[float, typer.Option(
        "--fail-rate", "--error-rate", help="Share of 5xx answers.")] = 0.0,
    rate_limit_rate: Annotated[float, typer.Option(help="Share of injected 429s.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests that hang.")] = 0.0,
    reset_rate: Annotated[float, typer.Option(
        "--reset-rate", "--reset", help="Share of connection resets.")] = 0.0,
    refuse_rate: Annotated[float, typer.Option(
        "--refuse-rate", "--refusal-rate", help="Share of refusals.")] = 0.0,
    truncate_rate: Annotated[float, typer.Option(help="Share of truncated outputs.")] = 0.0,
    quota_exhausted: Annotated[bool, typer.Option(
        "--quota-exhausted", help="Answer insufficient_quota.")] = False,
    quota_after: Annotated[int | None, typer.Option(
        help="Answer insufficient_quota after N admitted calls.")] = None,
) -> None:
    """Serve docpipe's Responses API simulator (a test tool, not a model)."""
    from workers.simulator import SimulatorConfig, run
    from workers.simulator.latency import parse_latency

    median, sigma = parse_latency(latency_ms)
    config = SimulatorConfig(
        rpm=rpm, tpm=tpm, limit_window_seconds=limit_window_seconds, latency_ms=median,
        latency_sigma=sigma, latency_per_input=latency_per_input, seed=seed,
        error_rate=fail_rate, rate_limit_rate=rate_limit_rate, timeout_rate=timeout_rate,
        reset_rate=reset_rate, refusal_rate=refuse_rate, truncate_rate=truncate_rate,
        quota_exhausted=quota_exhausted, quota_after=quota_after,
    )
    err.print(f"docpipe simulator (not a real model) on http://{host}:{port}/v1")
    run(config, host=host, port=port)
