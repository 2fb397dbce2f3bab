"""Images, a scanned PDF and a PDF with a chart page through ingest, the queue, a worker
and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from pipelines import EXTRACT
from pipelines.media import image_tokens
from tests.support.accounting import assert_accounted_for
from tests.support.files import make_image, make_mixed_pdf, make_png_bomb, make_scanned_pdf
from tests.support.stack import Stack
from workers.db.models import (
    Attachment,
    Attempt,
    AttemptOutcome,
    Document,
    Item,
    ItemStatus,
    Result,
)
from workers.db.session import session_scope

pytestmark = pytest.mark.e2e


def media_corpus(folder: Path) -> None:
    folder.mkdir()
    receipt = make_image(640, 480, "JPEG", text="Receipt 2031 total 12.50 EUR")
    files = {
        "photo.png": make_image(4000, 3000, text="Whiteboard photo"),
        "receipt.jpg": receipt,
        "receipt-copy.jpg": receipt,
        "diagram.webp": make_image(900, 600, "WEBP", text="Diagram"),
        "banner.gif": make_image(400, 100, "GIF", text="Banner", frames=3),
        "scan.pdf": make_scanned_pdf(2, text="Signed lease, page"),
        # a page of text, and a chart whose only text is its title: sent as a scan too
        "deck.pdf": make_mixed_pdf([("Board minutes: the chart shows revenue by region.",
                                     False), ("Revenue", True)]),
        "notes.txt": b"Meeting notes: Contoso Systems Ltd will pay $400.00 by 3 June 2025.",
        "fake.png": b"\x89PNG\r\n\x1a\n" + b"not an image" * 50,
        "poster.png": make_png_bomb(12_000, 10_000),  # 120 megapixels, claimed in a header
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_images_and_a_scan_are_sent_as_media_and_cost_their_pixels(
        stack: Stack, tmp_path: Path) -> None:
    media_corpus(tmp_path / "media")
    predicted = stack.cli("estimate", str(tmp_path / "media"), "--pipeline", "extract",
                          "--json")
    assert (predicted["to_call"], predicted["duplicates"]) == (7, 1)
    stack.start_workers(1)
    ingested = stack.ingest(tmp_path / "media", pipeline="extract")
    assert (ingested["items"], ingested["duplicates"], ingested["unreadable"]) == (7, 1, 2)
    report = stack.wait_for(ingested["run_id"], timeout=90)
    assert report.succeeded == 7, report.errors
    assert report.errors == {"document:corrupt_file": 1, "document:too_large": 1}
    assert stack.simulator.stats()["counters"]["ok"] == 7

    with session_scope(stack.database_url) as s:
        rows = s.execute(
            select(Item, Attempt.input_tokens, Result.output)
            .join(Attempt, Attempt.item_id == Item.id)
            .join(Result, Result.id == Item.result_id)
            .where(Item.run_id == ingested["run_id"], Attempt.outcome == AttemptOutcome.OK)
        ).all()
        tokens = {Path(item.source).name: used for item, used, _ in rows}
        for _, _, output in rows:
            EXTRACT.validate_output(json.dumps(output))
        stored = {Path(d.source).name: (a.kind, a.media_type, a.width, a.height, a.pages)
                  for d, a in s.execute(select(Document, Attachment).join(
                      Attachment, Attachment.document_id == Document.id)).all()}
        failed = {Path(i.source).name: i.last_error_message for i in s.scalars(
            select(Item).where(Item.run_id == ingested["run_id"],
                               Item.status == ItemStatus.FAILED))}

    # Every image is counted by its tiles, on top of what the text-only document costs.
    text_only = tokens.pop("notes.txt")
    assert text_only < 2000
    tile = image_tokens(2048, 1536)
    assert tokens["photo.png"] - text_only == pytest.approx(tile, abs=60)
    assert tokens["scan.pdf"] - text_only == pytest.approx(
        2 * image_tokens(*stored["scan.pdf"][2:4]), abs=60)
    assert tokens["deck.pdf"] - text_only == pytest.approx(
        image_tokens(*stored["deck.pdf"][2:4]), abs=60)
    assert all(used - text_only > 200 for used in tokens.values())
    # The estimate, made before anything was sent, counted what the calls were billed.
    assert predicted["input_tokens"] == pytest.approx(sum(tokens.values()) + text_only,
                                                      rel=0.02)

    # The photo is stored as it was sent: scaled to the model's 2,048 pixels; the GIF's first
    # frame as a PNG; the scan whole, with its page count.
    assert stored["photo.png"] == ("image", "image/png", 2048, 1536, 1)
    assert stored["banner.gif"][:2] == ("image", "image/png")
    assert stored["scan.pdf"][0::4] == ("pdf", 2)
    assert stored["deck.pdf"][0::4] == ("pdf", 1)
    assert "not a readable image" in str(failed["fake.png"])
    assert "100000000" in str(failed["poster.png"])
    assert_accounted_for(stack, ingested["run_id"])

    # The same media again: reused, not paid for twice.
    again = stack.ingest(tmp_path / "media", pipeline="extract")
    stack.wait_for(again["run_id"], timeout=60)
    assert stack.simulator.stats()["counters"]["ok"] == 7
