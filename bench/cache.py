"""Prompt caching: the share of input tokens served from the cache on a long shared prefix.

Writes a user pipeline (TOML) whose instructions are about ``--prefix-tokens`` tokens, the
way house rules and worked examples grow in real pipelines, and runs ``--docs`` memos
through it with one worker. docpipe lays every request out with the shared part first and
sends a ``prompt_cache_key`` per pipeline version; the simulator caches a prefix of 1,024+
tokens seen recently under the same key, in 128-token steps, as the API does. Reports the
cache hit ratio (cached / input tokens, from the attempts), the calls that hit, and the
dollars saved against the same tokens uncached.

    python bench/cache.py --docs 1000 --record
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corpus import write_corpus  # noqa: E402
from record import describe_machine, emit  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from stack import bench_stack, wait_finished  # noqa: E402

from pipelines import get_pipeline  # noqa: E402
from pipelines.tokens import count_tokens  # noqa: E402
from workers.db.models import Attempt, AttemptOutcome  # noqa: E402
from workers.db.session import session_scope  # noqa: E402
from workers.errors import Usage  # noqa: E402
from workers.llm.pricing import PriceTable  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "sender": {"type": "string"},
        "recipient": {"type": "string"},
        "date": {"type": ["string", "null"]},
        "amount_due": {"type": ["number", "null"]},
        "topics": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sender", "recipient", "date", "amount_due", "topics"],
    "additionalProperties": False,
}


def house_rules(tokens: int) -> str:
    """Numbered extraction rules, about ``tokens`` tokens long."""
    rules: list[str] = ["You extract the sender, recipient, date, amount due and topics of "
                        "business memos. Follow every house rule below."]
    n = 0
    while count_tokens("\n".join(rules)) < tokens:
        n += 1
        rules.append(f"Rule {n}: when a memo states an amount in words and in figures, keep the "
                     "figures; dates are YYYY-MM-DD; a topic is one lower-case word the memo "
                     f"itself uses; never guess a value the memo does not state (case {n}).")
    return "\n".join(rules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--prefix-tokens", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", default="300,1200")
    parser.add_argument("--record", action="store_true", help="Append to docs/benchmarks.md.")
    args = parser.parse_args()
    command = "python bench/cache.py " + " ".join(sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="docpipe-cache-") as tmp:
        work = Path(tmp)
        definitions = work / "house-pipelines"
        definitions.mkdir()
        (definitions / "memo-rules.md").write_text(house_rules(args.prefix_tokens))
        (definitions / "memo.schema.json").write_text(json.dumps(SCHEMA))
        (definitions / "memos.toml").write_text(
            'name = "memos"\nmodel = "gpt-4.1-mini"\ninstructions_file = "memo-rules.md"\n'
            'schema_file = "memo.schema.json"\nmax_output_tokens = 400\n')
        pipeline = get_pipeline("memos", [definitions])
        prefix = count_tokens(pipeline.full_instructions) + count_tokens(
            json.dumps(pipeline.schema, separators=(",", ":")))
        write_corpus(work / "corpus", args.docs, seed=3, words=(60, 400))
        with bench_stack(work, latency_ms=args.latency_ms, concurrency=args.concurrency,
                         name="cache", settings={"DOCPIPE_PIPELINES": str(definitions)}
                         ) as bench:
            started = time.monotonic()
            report = json.loads(bench.docpipe("ingest", str(work / "corpus"), "--pipeline",
                                              "memos", "--json"))
            wait_finished(bench.database_url, int(report["run_id"]))
            wall = time.monotonic() - started
            with session_scope(bench.database_url) as s:
                ok = (Attempt.run_id == report["run_id"]) & (Attempt.outcome == AttemptOutcome.OK)
                calls, input_tokens, cached, output_tokens, cost = s.execute(select(
                    func.count(), func.sum(Attempt.input_tokens), func.sum(Attempt.cached_tokens),
                    func.sum(Attempt.output_tokens), func.sum(Attempt.cost_usd)).where(ok)).one()
                hits = s.scalar(select(func.count()).where(ok, Attempt.cached_tokens > 0))
    uncached = PriceTable().cost(pipeline.model, Usage(input_tokens=int(input_tokens),
                                                       output_tokens=int(output_tokens)))
    cost = Decimal(cost)
    machine = describe_machine()
    text = "\n".join([
        f"### Prompt caching: {args.docs:,} documents behind a {prefix:,}-token shared prefix "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. A TOML user pipeline on `{pipeline.model}` whose instructions "
        f"and schema come to {prefix:,} tokens; memos of 60 to 400 words; one worker with "
        f"{args.concurrency} threads, SQLite, simulator latency {args.latency_ms} ms (median, "
        f"p99). One `prompt_cache_key` lane (the configured rate is unknown, so no sharding).",
        "",
        "| calls | calls with a cache hit | input tokens | cached tokens | cache hit ratio | "
        "cost | same tokens uncached | saved | wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {calls:,} | {hits:,} | {int(input_tokens):,} | {int(cached):,} | "
        f"{int(cached) / int(input_tokens):.1%} | ${cost:.4f} | ${uncached:.4f} | "
        f"{1 - cost / uncached:.1%} | {wall:.1f} s |",
    ]) + "\n"
    emit(text, record=args.record)


if __name__ == "__main__":
    main()
