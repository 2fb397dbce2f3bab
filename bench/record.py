"""Printing a benchmark's figures and, on request, keeping them in docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def emit(text: str, *, record: bool, target: Path = TARGET) -> None:
    """Print ``text``; with ``record``, append it to ``target`` (``docs/benchmarks.md``)."""
    print(text)
    if not record:
        return
    if not target.exists():
        target.write_text("# Benchmarks\n\nMeasured figures, each with the command that "
                          "produced it and the machine it ran on.\n\n")
    with target.open("a") as out:
        out.write("\n" + text)


def describe_machine() -> str:
    """This machine as the benchmarks record it: system, architecture, cores, Python."""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")
