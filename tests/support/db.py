"""Rows and races for the repository tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.documents import content_hash
from workers.db import repository as repo
from workers.db.session import session_scope


def new_run(texts: list[str], *, pipeline: str = "summarise", version: str = "v1"
            ) -> tuple[int, list[int]]:
    """A started run of one pending item per text; returns its id and the items' ids."""
    with session_scope() as s:
        run = repo.create_run(s, pipeline=pipeline, version=version, model="gpt-4.1-mini",
                              queue="docpipe.live")
        docs = [repo.NewDocument(content_hash(t), f"src-{i}", "text/plain", len(t), t)
                for i, t in enumerate(texts)]
        ids = repo.upsert_documents(s, docs)
        items = repo.add_items(s, run.id, [(ids[d.content_hash], d.source) for d in docs])
        repo.start_run(s, run.id)
        return run.id, items


def race(workers: int, fn: Callable[[], Any]) -> list[Any]:
    """Call ``fn`` from ``workers`` threads released together; return their answers."""
    barrier = threading.Barrier(workers)

    def go() -> Any:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: go(), range(workers)))
