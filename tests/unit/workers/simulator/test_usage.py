"""The simulator bills with a counter of its own; docpipe's estimate must predict it.

Two implementations of the same documented rules (o200k_base text, framing, image tiles,
PDF pages): docpipe's in ``pipelines.tokens`` and ``pipelines.media``, the simulator's in
``workers/simulator/usage.py``. A disagreement means docpipe's estimates, limits or budgets
would be off against what the simulator (and so every test) bills.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pipelines import EXTRACT, SUMMARISE
from pipelines.media import image_tokens as docpipe_image_tokens
from pipelines.media import pdf_pages, prepare_image, scanned_pdf
from pipelines.tokens import chars_estimate, estimate_request_tokens
from tests.support.files import make_image, make_scanned_pdf
from workers.simulator.usage import admission_estimate, image_tokens, input_tokens

MEMO = "Memo from Acme Widgets Ltd to Globex Corporation about the invoice of $1,200.00."


def _bodies() -> dict[str, dict[str, Any]]:
    image = prepare_image("photo.png", make_image(3000, 2000), "image/png")
    data = make_scanned_pdf(3)
    pages, first = pdf_pages(data)
    scan = scanned_pdf("scan.pdf", data, pages, first)
    low = EXTRACT.request(MEMO, attachments=(image,))
    for message in low["input"]:
        for part in message["content"]:
            if part.get("type") == "input_image":
                part["detail"] = "low"
    return {
        "text": SUMMARISE.request(MEMO),
        "long-text": SUMMARISE.request("invoice " * 130_000),  # past bpe-openai's segment
        "string-input": {**SUMMARISE.request(MEMO), "input": MEMO},
        "image": EXTRACT.request(MEMO, attachments=(image,)),
        "low-detail-image": low,
        "scanned-pdf": EXTRACT.request("", attachments=(scan,)),
        "broken-image": {**SUMMARISE.request(MEMO), "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64," +
             base64.b64encode(b"not a png").decode()}]}]},
    }


BODIES = _bodies()


@pytest.mark.parametrize("name", list(BODIES))
def test_docpipes_estimate_is_what_the_simulator_bills(name: str) -> None:
    body = BODIES[name]
    assert estimate_request_tokens(body) == input_tokens(body)
    assert chars_estimate(body) == admission_estimate(body)


@pytest.mark.parametrize(("size", "low", "tokens"), [
    ((1024, 1024), False, 765), ((2048, 4096), False, 1105), ((4000, 3000), True, 85),
    ((512, 512), False, 255), ((100, 5000), False, 765),
])
def test_image_tokens_follow_the_documented_tiles(size: tuple[int, int], low: bool,
                                                  tokens: int) -> None:
    assert image_tokens(*size, low=low) == tokens
    assert docpipe_image_tokens(*size, "low" if low else "high") == tokens
