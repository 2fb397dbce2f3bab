"""Synthetic corpora for the benchmarks: memos of varied length, like real collections."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("contract invoice report revenue supplier warehouse shipment quarter payment customer "
         "audit budget forecast license renewal delivery clause penalty warranty schedule "
         "tender freight margin inventory").split()


def write_corpus(folder: Path, count: int, *, seed: int, words: tuple[int, int]) -> None:
    """``count`` text files of ``words`` (min, max) random words each, after a header line."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        body = [rng.choice(WORDS) for _ in range(rng.randint(*words))]
        text = (f"Memo {i} from Northwind Traders Inc to Contoso Systems Ltd, dated "
                f"{1 + i % 28} May 2025. The amount due is ${100 + i}.00.\n" + " ".join(body))
        (folder / f"doc-{i:06d}.txt").write_text(text)
