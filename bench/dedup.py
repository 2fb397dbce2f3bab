"""Duplicates: what a corpus with repeated documents costs through docpipe and through a loop.

Writes ``--docs`` files of which ``--duplicate-share`` are copies of others: byte-identical
copies under other names, and copies with Windows line endings and trailing spaces, which
normalise to the same text. Then, on the same simulator and price table:

- **naive**: a plain loop (``--concurrency`` threads) that reads every file and calls
  ``responses.create`` once per file with the same request body docpipe would send;
- **docpipe, first run**: ``docpipe ingest`` and one worker;
- **docpipe, second run** over the same folder, as a nightly re-run would be.

Every figure is measured: the calls the simulator answered, and the dollars of the usage it
returned, priced by ``workers.llm.pricing``.

    python bench/dedup.py --docs 2000 --duplicate-share 0.3 --record
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from stack import BenchStack, bench_stack, wait_finished  # noqa: E402

from pipelines import get_pipeline  # noqa: E402
from pipelines.documents import SourceDocument, read_source  # noqa: E402
from workers.db.models import Attempt, Item  # noqa: E402
from workers.db.session import session_scope  # noqa: E402
from workers.errors import Usage  # noqa: E402
from workers.llm.pricing import PriceTable  # noqa: E402


@dataclass
class Spend:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: Decimal = Decimal(0)
    seconds: float = 0.0


def make_corpus(folder: Path, docs: int, share: float, seed: int) -> int:
    """Write the corpus; return how many files are unique."""
    unique = round(docs * (1 - share))
    write_corpus(folder, unique, seed=seed, words=(80, 600))
    rng = random.Random(seed)
    originals = sorted(folder.iterdir())
    copies = folder / "copies"
    copies.mkdir()
    for n in range(docs - unique):
        source = rng.choice(originals)
        target = copies / f"copy-{n:06d}-{source.name}"
        if n % 3 == 0:  # the same text as exported on Windows, with trailing spaces
            target.write_bytes(source.read_text().replace("\n", "  \r\n").encode())
        else:
            shutil.copyfile(source, target)
    return unique


def naive(folder: Path, pipeline_name: str, base_url: str, concurrency: int,
          prices: PriceTable) -> Spend:
    """One call per file, no queue, no database: what a script would pay."""
    pipeline = get_pipeline(pipeline_name)
    client = openai.OpenAI(api_key="sk-bench", base_url=f"{base_url}/v1", max_retries=5)
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def call(path: Path) -> Usage:
        [doc] = list(read_source(path))
        assert isinstance(doc, SourceDocument)
        response = client.responses.create(**pipeline.request(doc.text))
        assert response.usage is not None
        return Usage(input_tokens=response.usage.input_tokens,
                     cached_tokens=response.usage.input_tokens_details.cached_tokens,
                     output_tokens=response.usage.output_tokens)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        usages = list(pool.map(call, files))
    spend = Spend(seconds=time.monotonic() - started)
    for usage in usages:
        spend.calls += 1
        spend.input_tokens += usage.input_tokens
        spend.output_tokens += usage.output_tokens
        spend.usd += prices.cost(pipeline.model, usage)
    return spend


def docpipe_run(bench: BenchStack, folder: Path, pipeline: str,
                simulator_calls: Callable[[], int]) -> tuple[Spend, dict[str, int]]:
    """Ingest ``folder`` and wait; return the spend and ingest's report plus reused items."""
    calls_before = simulator_calls()
    started = time.monotonic()
    report = json.loads(bench.docpipe("ingest", str(folder), "--pipeline", pipeline, "--json"))
    run_id = int(report["run_id"])
    wait_finished(bench.database_url, run_id)
    spend = Spend(seconds=time.monotonic() - started)
    spend.calls = simulator_calls() - calls_before
    with session_scope(bench.database_url) as s:
        totals = s.execute(select(
            func.coalesce(func.sum(Attempt.input_tokens), 0),
            func.coalesce(func.sum(Attempt.output_tokens), 0),
            func.coalesce(func.sum(Attempt.cost_usd), 0),
        ).where(Attempt.run_id == run_id)).one()
        report["reused"] = s.scalar(select(func.count()).where(
            Item.run_id == run_id, Item.reused.is_(True))) or 0
    spend.input_tokens, spend.output_tokens = int(totals[0]), int(totals[1])
    spend.usd = Decimal(totals[2])
    return spend, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--duplicate-share", type=float, default=0.3)
    parser.add_argument("--pipeline", default="extract")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", default="100,400")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()
    command = "python bench/dedup.py " + " ".join(sys.argv[1:])
    prices = PriceTable()
    model = get_pipeline(args.pipeline).model

    with tempfile.TemporaryDirectory(prefix="docpipe-dedup-") as tmp:
        work = Path(tmp)
        folder = work / "corpus"
        unique = make_corpus(folder, args.docs, args.duplicate_share, args.seed)
        with bench_stack(work, latency_ms=args.latency_ms, concurrency=args.concurrency,
                         name="dedup") as bench:
            def simulator_calls() -> int:
                with urllib.request.urlopen(f"{bench.simulator_url}/_sim/stats") as answer:
                    stats = json.load(answer)
                return int(stats["counters"].get("ok", 0))

            loop = naive(folder, args.pipeline, bench.simulator_url, args.concurrency, prices)
            first, first_report = docpipe_run(bench, folder, args.pipeline, simulator_calls)
            second, second_report = docpipe_run(bench, folder, args.pipeline, simulator_calls)

    machine = describe_machine()

    def row(name: str, spend: Spend, note: str) -> str:
        share = spend.usd / loop.usd if loop.usd else Decimal(0)
        return (f"| {name} | {spend.calls:,} | {spend.input_tokens:,} | {spend.output_tokens:,} "
                f"| ${spend.usd:.4f} | {share:.1%} | {spend.seconds:.1f} s | {note} |")

    text = "\n".join([
        f"### Duplicates: {args.docs:,} documents, {args.docs - unique:,} of them copies "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. `{args.pipeline}` on `{model}` at the shipped prices, simulator "
        f"latency {args.latency_ms} ms (median, p99), {args.concurrency} threads for the loop "
        f"and for docpipe's one worker, SQLite. {unique:,} unique texts; a third of the copies "
        "have Windows line endings and trailing spaces.",
        "",
        "| | calls | input tokens | output tokens | cost | of the naive cost | wall time | |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        row("naive loop, one call per file", loop, ""),
        row("docpipe, first run", first, f"{first_report['items']:,} items; "
            f"{first_report['duplicates']:,} copies folded at ingest"),
        row("docpipe, second run of the same folder", second,
            f"{second_report['items']:,} items, {second_report['reused']:,} of them reused"),
    ]) + "\n"
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
