"""Extraction: what a document's reader would recognise of it, per format, and how fast.

Writes the corpus of ``tests/support/extraction.py`` (real-shaped files, each with the text
a reader expects) to a folder, then reads every file with ``pipelines.documents.read_bytes``
of the source tree given by ``--tree`` (default: this one), in a process of its own, so an
older checkout can be measured on the same files:

    git worktree add /tmp/before <commit>
    python bench/extraction.py --corpus /tmp/corpus --record
    python bench/extraction.py --corpus /tmp/corpus --tree /tmp/before --record

Prints per file the outcome (its words' recall and precision against the expected text, or
the refusal's code), and per format the mean recall and precision, the files refused that a
reader can read, and the extraction time per MB (best of ``--repeat`` reads).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import describe_machine, emit  # noqa: E402

from tests.support.extraction import (  # noqa: E402
    Sample,
    docx_corpus,
    html_corpus,
    one_line_share,
    parts_found,
    pdf_corpus,
    precision,
    recall,
)

#: Run inside the measured tree: read each file, print what came out and how long it took.
READER = r"""
import json, sys, time
from pipelines.documents import read_bytes
folder, repeat = sys.argv[1], int(sys.argv[2])
out = {}
for entry in json.load(open(f"{folder}/index.json")):
    data = open(f"{folder}/{entry['name']}", "rb").read()
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        docs = list(read_bytes(entry["name"], data, entry["media_type"]))
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    (doc,) = docs
    out[entry["name"]] = {"text": getattr(doc, "text", None), "code": getattr(doc, "code", None),
                          "seconds": best, "bytes": len(data),
                          "pages_as_scan": sum(a.pages for a in getattr(doc, "attachments", ()))}
print(json.dumps(out))
"""


def measure(tree: Path, repeat: int, corpus: Path | None
            ) -> tuple[list[dict[str, object]], dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="docpipe-extraction-") as scratch:
        folder = corpus or Path(scratch)
        if not (folder / "index.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            samples = [*pdf_corpus(), *html_corpus(), *docx_corpus()]
            for sample in samples:
                (folder / sample.name).write_bytes(sample.data)
            (folder / "index.json").write_text(json.dumps(
                [{"name": s.name, "media_type": s.media_type, "expected": s.expected,
                  "refused_as": s.refused_as, "parts": s.parts,
                  "scanned_pages": s.scanned_pages} for s in samples]))
        index = json.loads((folder / "index.json").read_text())
        result = subprocess.run(
            [sys.executable, "-c", READER, str(folder), str(repeat)], capture_output=True,
            text=True, check=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)
    read = json.loads(result.stdout)
    rows: list[dict[str, object]] = []
    for entry in index:
        got = read[entry["name"]]
        text = got["text"]
        row: dict[str, object] = {"name": entry["name"], "format": entry["media_type"],
                                  "code": got["code"], "seconds": got["seconds"],
                                  "bytes": got["bytes"], "wanted": entry["refused_as"]}
        if entry["refused_as"] is None:
            got_text = text if text is not None else ""
            row["recall"] = recall(entry["expected"], got_text)
            row["precision"] = precision(entry["expected"], got_text)
            row["one_line"] = one_line_share(entry["expected"], got_text)
            row["newlines"] = (got_text.count("\n") + 1) / (entry["expected"].count("\n") + 1)
            row["per_100_words"] = 100 * got_text.count("\n") / max(1, len(got_text.split()))
            row["expected_per_100_words"] = 100 * entry["expected"].count("\n") / max(
                1, len(entry["expected"].split()))
            sample = Sample(entry["name"], b"", entry["media_type"], entry["expected"],
                            parts=tuple(tuple(part) for part in entry.get("parts", ())))
            row["parts"], row["in_order"] = parts_found(sample, got_text)
            row["of_parts"] = len(sample.parts)
            # Pages of a PDF with text that should go as a scan too, and went.
            wanted_pages = len(entry.get("scanned_pages", ()))
            row["scanned"] = min(wanted_pages, int(got.get("pages_as_scan", 0))) if got_text \
                else 0
            row["of_scanned"] = wanted_pages
        rows.append(row)
    summary: dict[str, object] = {}
    for media_type in dict.fromkeys(str(r["format"]) for r in rows):
        of = [r for r in rows if r["format"] == media_type]
        readable = [r for r in of if r["wanted"] is None]
        summary[media_type] = {
            key: mean(float(str(r[key])) for r in readable)
            for key in ("recall", "precision", "one_line", "newlines", "per_100_words",
                        "expected_per_100_words")} | {
            "refused_readable": sum(1 for r in readable if r["code"] is not None),
            "parts": sum(int(str(r["parts"])) for r in readable),
            "of_parts": sum(int(str(r["of_parts"])) for r in readable),
            "out_of_order": sum(1 for r in readable if not r["in_order"]),
            "scanned": sum(int(str(r["scanned"])) for r in readable),
            "of_scanned": sum(int(str(r["of_scanned"])) for r in readable),
            "readable": len(readable),
            "ms_per_mb": 1000 * sum(float(str(r["seconds"])) for r in of)
            / (sum(int(str(r["bytes"])) for r in of) / 1e6)}
    return rows, summary


def parts_of(figures: dict[str, object]) -> str:
    if not figures["of_parts"]:
        return "–"
    return f"{figures['parts']} of {figures['of_parts']} ({figures['out_of_order']})"


def report(rows: list[dict[str, object]], summary: dict[str, object], command: str) -> str:
    lines = [f"### Extraction ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"Command: `{command}`  ", f"Machine: {describe_machine()}.", "",
             "| file | outcome | word recall | word precision | parts found |",
             "|---|---|---:|---:|---:|"]
    for row in rows:
        outcome = f"refused: `{row['code']}`" if row["code"] else "read"
        if row["wanted"] is not None:
            outcome += " (as it should be)" if row["code"] == row["wanted"] else " (wrongly)"
            lines.append(f"| {row['name']} | {outcome} | – | – | – |")
        else:
            parts = (f"{row['parts']} of {row['of_parts']}"
                     + ("" if row["in_order"] else ", out of order")) if row["of_parts"] else "–"
            lines.append(f"| {row['name']} | {outcome} | {float(str(row['recall'])):.2f} | "
                         f"{float(str(row['precision'])):.2f} | {parts} |")
    lines += ["", "| format | mean recall | mean precision | paragraphs on one line | "
              "lines against the expected | newlines per 100 words (expected) | "
              "parts found (files out of order) | "
              "picture pages sent | readable files refused | ms per MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for media_type, figures in summary.items():
        f = dict(figures)  # type: ignore[call-overload]
        scanned = f"{f['scanned']} of {f['of_scanned']}" if f["of_scanned"] else "–"
        lines.append(f"| {media_type} | {f['recall']:.2f} | {f['precision']:.2f} | "
                     f"{f['one_line']:.0%} | {f['newlines']:.2f}× | {f['per_100_words']:.1f} "
                     f"({f['expected_per_100_words']:.1f}) | {parts_of(f)} | "
                     f"{scanned} | {f['refused_readable']} of {f['readable']} | "
                     f"{f['ms_per_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="The source tree whose pipelines.documents reads the files.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=None,
                        help="Keep the corpus in this folder, or read it from there if it is "
                        "already written (to measure a tree whose install lacks what made it).")
    parser.add_argument("--record", action="store_true", help="Append to docs/extraction.md.")
    args = parser.parse_args()
    rows, summary = measure(args.tree.resolve(), args.repeat, args.corpus)
    command = "python bench/extraction.py " + " ".join(sys.argv[1:])
    emit(report(rows, summary, command), record=args.record,
         target=ROOT / "docs" / "extraction.md")


if __name__ == "__main__":
    main()
