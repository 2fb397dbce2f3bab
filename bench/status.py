"""How long ``docpipe status RUN`` takes on a large run (issue 8's goal: under 200 ms at 100k).

Writes one run of ``--items`` items into a throwaway PostgreSQL cluster with server-side
``generate_series`` (documents, items in a realistic mix of states, one attempt per called
item and a retry for some, results), then times:

- the query behind it, ``repository.run_report``, in this process (median of ``--repeat``);
- ``docpipe status RUN --json`` as a user runs it, process start included (median).

    python bench/status.py --items 100000 --record
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import describe_machine, emit  # noqa: E402
from soak import throwaway_postgres  # noqa: E402
from sqlalchemy import text  # noqa: E402

from workers.db import repository as repo  # noqa: E402
from workers.db.session import get_engine, session_scope  # noqa: E402
from workers.runtime.embedded import docpipe_command  # noqa: E402

SEED = """
INSERT INTO runs (id, pipeline, pipeline_version, model, queue, status, total_items,
                  succeeded_items, failed_items, spent_usd, reserved_usd, mode, created_at)
VALUES (1, 'summarise', 'v1', 'gpt-4.1-mini', 'docpipe.live', 'running', :n, 0, 0, 0, 0,
        'live', now() - interval '1 hour');
INSERT INTO documents (id, content_hash, source, media_type, size_bytes, text, attachments,
                       created_at)
SELECT g, md5(g::text) || md5((g + 1)::text), 'corpus/doc-' || g || '.txt', 'text/plain',
       4000, repeat('word ', 800), 0, now()
FROM generate_series(1, :n) AS g;
-- 90% succeeded, 4% failed, 3% queued, 2% retry, 1% running.
-- calls and cost_usd: the attempts written below (a call for g % 50 <> 0, a 429 for
-- g % 10 = 0).
INSERT INTO items (id, run_id, document_id, source, chunk_index, status, attempts, reused,
                   budget_wait_ms, worker_losses, level, send_live, calls, cost_usd,
                   last_error_class, last_error_code, created_at, updated_at, finished_at)
SELECT g, 1, g, 'corpus/doc-' || g || '.txt', 0,
       CASE WHEN g % 100 < 90 THEN 'succeeded' WHEN g % 100 < 94 THEN 'failed'
            WHEN g % 100 < 97 THEN 'queued' WHEN g % 100 < 99 THEN 'retry' ELSE 'running' END,
       CASE WHEN g % 100 < 90 THEN 1 ELSE 2 END, g % 50 = 0, 0, 0, 0, false,
       CASE WHEN g % 50 <> 0 THEN 1 ELSE 0 END + CASE WHEN g % 10 = 0 THEN 1 ELSE 0 END,
       CASE WHEN g % 50 <> 0 THEN 0.0008 ELSE 0 END,
       CASE WHEN g % 100 BETWEEN 90 AND 93 THEN 'bad_output' END,
       CASE WHEN g % 100 BETWEEN 90 AND 93 THEN 'schema_violation' END,
       now() - interval '1 hour', now(),
       CASE WHEN g % 100 < 94 THEN now() - (g % 3600) * interval '1 second' END
FROM generate_series(1, :n) AS g;
INSERT INTO attempts (item_id, run_id, model, outcome, worker, http_status, started_at,
                      latency_ms, input_tokens, cached_tokens, output_tokens, reasoning_tokens,
                      cost_usd, reserved_usd)
SELECT g, 1, 'gpt-4.1-mini', CASE WHEN g % 100 < 90 THEN 'ok' ELSE 'server_error' END,
       'bench:1', CASE WHEN g % 100 < 90 THEN 200 ELSE 500 END,
       now() - (g % 3600) * interval '1 second', 400 + g % 900, 900, 200, 250, 0,
       0.0008, 0
FROM generate_series(1, :n) AS g WHERE g % 50 <> 0;
INSERT INTO attempts (item_id, run_id, model, outcome, worker, http_status, started_at,
                      latency_ms, input_tokens, cached_tokens, output_tokens, reasoning_tokens,
                      cost_usd, reserved_usd)
SELECT g, 1, 'gpt-4.1-mini', 'rate_limited', 'bench:1', 429,
       now() - (g % 3600) * interval '1 second', 30, 0, 0, 0, 0, 0, 0
FROM generate_series(1, :n) AS g WHERE g % 10 = 0;
-- 2% of the paths were copies of another's content (duplicates, exported with it)
INSERT INTO run_duplicates (run_id, document_id, source, created_at)
SELECT 1, g, 'corpus/copy-' || g || '.txt', now()
FROM generate_series(1, :n) AS g WHERE g % 50 = 1;
SELECT setval(pg_get_serial_sequence('runs', 'id'), 1);
SELECT setval(pg_get_serial_sequence('documents', 'id'), :n);
SELECT setval(pg_get_serial_sequence('items', 'id'), :n);
ANALYZE;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="docpipe-status-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the postgres user needs to reach its data directory
        with throwaway_postgres(work) as database:
            env = {**os.environ, "DOCPIPE_DATABASE_URL": database}
            subprocess.run(docpipe_command("db", "upgrade"), env=env, check=True,
                           capture_output=True)
            started = time.monotonic()
            with get_engine(database).begin() as conn:
                for statement in SEED.split(";\n"):
                    if statement.strip():
                        conn.execute(text(statement), {"n": args.items})
            seeded = time.monotonic() - started
            in_process = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                with session_scope(database) as session:
                    report = repo.run_report(session, 1)
                in_process.append(time.perf_counter() - began)
            assert report is not None and report.total == args.items
            command = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                subprocess.run(docpipe_command("status", "1", "--json"), env=env, check=True,
                               capture_output=True)
                command.append(time.perf_counter() - began)
            exports: dict[str, list[float]] = {"parquet": [], "csv": [], "jsonl": []}
            for _ in range(3):
                for fmt in exports:
                    began = time.perf_counter()
                    subprocess.run(docpipe_command("results", "1", "-o",
                                                   str(work / f"out.{fmt}")),
                                   env=env, check=True, capture_output=True)
                    exports[fmt].append(time.perf_counter() - began)
            with get_engine(database).connect() as conn:
                rows = conn.execute(text(
                    "SELECT count(*) FROM document_results WHERE run_id = 1")).scalar_one()
            startup = []
            for _ in range(3):
                began = time.perf_counter()
                subprocess.run(docpipe_command("status", "--help"), env=env, check=True,
                               capture_output=True)
                startup.append(time.perf_counter() - began)
    attempts = report.attempts
    line = " ".join(sys.argv[1:])
    hard_break = "  "  # a Markdown line break
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms | {min(values) * 1000:.0f} ms"

    text_out = f"""
### `status` on a run of {args.items:,} items ({when})

Command: `python bench/status.py {line}`{hard_break}
Machine: {describe_machine()}, PostgreSQL 15 (a throwaway cluster, fsync off). One run of
{args.items:,} items (90% succeeded, 4% failed, the rest queued, retrying or running) with
{attempts:,} attempts, written by `generate_series` in {seeded:.1f} s.

| what | median of {args.repeat} | fastest |
|---|---:|---:|
| `repository.run_report` (the queries behind `status`) | {ms(in_process)} |
| `docpipe status 1 --json`, process start included | {ms(command)} |
| `docpipe status --help` (the process start alone) | {ms(startup)} |

`docpipe results 1 -o FILE`, the `document_results` view's {rows:,} rows (one a path, 2%
of them duplicates), median of 3, process start included:

| format | median | fastest |
|---|---:|---:|
""" + "".join(f"| {fmt} | {ms(times)} |\n" for fmt, times in exports.items())
    emit(text_out, record=args.record)


if __name__ == "__main__":
    main()
