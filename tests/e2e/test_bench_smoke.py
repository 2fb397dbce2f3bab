"""The throughput benchmark, tiny: it runs end to end and prints every figure it records.

The real runs (20,000 documents) are by hand; see docs/benchmarks.md. This keeps the script
working: the session's PostgreSQL, its own Redis, simulator and two workers, and the raw SDK
loop.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_throughput_benchmark_smoke(tmp_path: Path, postgres_url: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--docs", "40",
         "--concurrency", "8", "--latency-ms", "20,60", "--words", "20,80",
         "--database-url", postgres_url],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"raw `AsyncOpenAI` loop \| 40 \|", out), out
    assert re.search(r"docpipe, ingest to last result \| 40 \|", out), out
    ratio = re.search(r"Ratio, end to end: ([0-9.]+)", out)
    assert ratio is not None and 0 < float(ratio.group(1)) < 5
    assert "CPU ms per document" in out
    rss = re.search(r"Peak resident memory of an engine process: ([0-9]+) MB", out)
    assert rss is not None and 0 < int(rss.group(1)) < 2000, out
