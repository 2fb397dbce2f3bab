"""Images and scans: reading, scaling down, request parts and their token estimates."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pipelines import EXTRACT, SUMMARISE
from pipelines.documents import SourceDocument, read_bytes, read_source
from pipelines.errors import DocumentError
from pipelines.media import (
    MAX_IMAGE_SIDE,
    decode_data_url,
    image_tokens,
    part_tokens,
    prepare_image,
    render_pages,
)
from pipelines.tokens import admission_tokens, chars_estimate, estimate_request_tokens
from tests.support.files import make_image, make_png_bomb, make_scanned_pdf


def read_one(name: str, data: bytes, media_type: str) -> SourceDocument:
    [doc] = list(read_bytes(name, data, media_type))
    assert isinstance(doc, SourceDocument), doc
    return doc


@pytest.mark.parametrize(("size", "detail", "tokens"), [
    ((512, 512), "high", 85 + 170),
    ((1024, 1024), "high", 85 + 170 * 4),  # scaled to 768 x 768: 2 x 2 tiles
    ((2048, 4096), "high", 85 + 170 * 6),  # 1024 x 2048, then 768 x 1536: 2 x 3 tiles
    ((800, 600), "auto", 85 + 170 * 4),
    ((4000, 3000), "low", 85),
])
def test_image_tokens_follow_the_tile_rule(size: tuple[int, int], detail: str, tokens: int
                                           ) -> None:
    assert image_tokens(*size, detail) == tokens  # type: ignore[arg-type]


@given(st.integers(1, 20_000), st.integers(1, 20_000))
def test_image_tokens_are_bounded(width: int, height: int) -> None:
    # Never more than the 2,048 x 768 worst case of 4 x 2 tiles... plus one row of slack.
    assert 85 + 170 <= image_tokens(width, height) <= 85 + 170 * 12


def test_a_large_photo_is_scaled_down_and_keeps_its_format() -> None:
    doc = read_one("photo.png", make_image(4000, 3000), "image/png")
    [image] = doc.attachments
    assert doc.text == "" and image.kind == "image" and image.media_type == "image/png"
    assert (image.width, image.height) == (MAX_IMAGE_SIDE, 1536)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (2048, 1536) and decoded.format == "PNG"


def test_a_small_image_is_sent_as_it_is() -> None:
    data = make_image(640, 480, "JPEG")
    [image] = read_one("x.jpg", data, "image/jpeg").attachments
    assert image.data == data and (image.width, image.height) == (640, 480)


def test_an_animated_gif_keeps_its_first_frame_as_png() -> None:
    [image] = read_one("a.gif", make_image(300, 200, "GIF", frames=3), "image/gif").attachments
    assert image.media_type == "image/png"
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert getattr(decoded, "n_frames", 1) == 1


def test_webp_is_read() -> None:
    [image] = read_one("w.webp", make_image(300, 200, "WEBP"), "image/webp").attachments
    assert image.media_type == "image/webp"


def test_an_image_too_big_for_its_bytes_becomes_a_jpeg() -> None:
    noisy = Image.effect_noise((1500, 1500), 120).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    image = prepare_image("noise.png", out.getvalue(), "image/png", max_bytes=len(out.getvalue())
                          // 2)
    assert image.media_type == "image/jpeg" and len(image.data) < len(out.getvalue()) // 2


@pytest.mark.parametrize(("data", "code"), [
    (b"\x89PNG\r\n\x1a\nnot really", "corrupt_file"),
    (make_png_bomb(12_000, 10_000), "too_large"),  # 120 megapixels in a small file
    (make_png_bomb(40_000, 40_000), "too_large"),  # past what Pillow itself refuses
])
def test_bad_images_fail_with_a_reason(data: bytes, code: str) -> None:
    [result] = list(read_bytes("bad.png", data, "image/png"))
    assert isinstance(result, DocumentError) and result.code == code
    assert "bad.png" in result.message


def test_an_image_that_stays_too_large_is_refused() -> None:
    with pytest.raises(DocumentError) as caught:
        prepare_image("x.png", make_image(900, 900), "image/png", max_bytes=100)
    assert caught.value.code == "too_large"


def test_a_scanned_pdf_is_kept_whole_with_its_page_count() -> None:
    data = make_scanned_pdf(3)
    doc = read_one("scan.pdf", data, "application/pdf")
    [scan] = doc.attachments
    assert (scan.kind, scan.pages, scan.data) == ("pdf", 3, data)
    assert max(scan.width, scan.height) == 2048


def test_a_scan_of_too_many_pages_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long-scan.pdf"
    path.write_bytes(make_scanned_pdf(101))
    [result] = list(read_source(path))
    assert isinstance(result, DocumentError) and result.code == "too_large"
    assert "100 pages" in result.message


def test_identical_images_hash_alike_and_differ_from_others() -> None:
    one = read_one("a.png", make_image(100, 100, text="a"), "image/png")
    again = read_one("copy.png", make_image(100, 100, text="a"), "image/png")
    other = read_one("b.png", make_image(100, 100, text="b"), "image/png")
    assert one.content_hash == again.content_hash != other.content_hash


def test_the_request_keeps_the_shared_prefix_and_frames_the_image() -> None:
    doc = read_one("photo.jpg", make_image(640, 480, "JPEG"), "image/jpeg")
    body = EXTRACT.request(doc.text, attachments=doc.attachments)
    text_body = EXTRACT.request("some text")
    assert body["instructions"] == text_body["instructions"]
    assert body["text"] == text_body["text"]
    content = body["input"][0]["content"]
    assert [part["type"] for part in content] == ["input_text", "input_image", "input_text"]
    assert content[0]["text"] == "<document>" and content[2]["text"] == "</document>"
    media_type, data = decode_data_url(content[1]["image_url"])
    assert (media_type, data) == ("image/jpeg", doc.attachments[0].data)


def test_a_scan_goes_as_a_file_or_as_page_images_or_not_at_all() -> None:
    doc = read_one("scan.pdf", make_scanned_pdf(2), "application/pdf")
    as_file = SUMMARISE.request("", attachments=doc.attachments)["input"][0]["content"][1]
    assert as_file["type"] == "input_file" and as_file["filename"] == "scan.pdf"
    assert decode_data_url(as_file["file_data"])[1] == doc.attachments[0].data

    images = dataclasses.replace(SUMMARISE, scanned_pdf="images")
    parts = images.request("", attachments=doc.attachments)["input"][0]["content"][1:-1]
    assert [p["type"] for p in parts] == ["input_image", "input_image"]
    assert images.version != SUMMARISE.version  # a different question, a different result

    refuse = dataclasses.replace(SUMMARISE, scanned_pdf="refuse")
    with pytest.raises(DocumentError) as caught:
        refuse.request("", attachments=doc.attachments)
    assert caught.value.code == "no_text_layer"


def test_pages_render_at_the_model_s_size() -> None:
    doc = read_one("scan.pdf", make_scanned_pdf(2), "application/pdf")
    pages = render_pages(doc.attachments[0])
    assert len(pages) == 2 and all(max(p.width, p.height) == 2048 for p in pages)
    assert pages[0].filename == "scan.pdf#page=1"


def test_estimates_count_pixels_not_base64() -> None:
    doc = read_one("photo.png", make_image(4000, 3000), "image/png")
    body = EXTRACT.request("", attachments=doc.attachments)
    text_only = EXTRACT.request("")
    image_part = body["input"][0]["content"][1]
    assert part_tokens(image_part) == image_tokens(2048, 1536) == 765
    assert estimate_request_tokens(body) - estimate_request_tokens(text_only) == \
        pytest.approx(765, abs=10)
    # The base64 is left out of the character estimate, or the limiter would hold 5x more.
    assert chars_estimate(body) < chars_estimate(text_only) + 100
    assert admission_tokens(body) < admission_tokens(text_only) + 800


def test_a_scan_is_estimated_page_by_page() -> None:
    doc = read_one("scan.pdf", make_scanned_pdf(4), "application/pdf")
    part = SUMMARISE.request("", attachments=doc.attachments)["input"][0]["content"][1]
    assert part_tokens(part) == 4 * image_tokens(doc.attachments[0].width,
                                                 doc.attachments[0].height)


def test_low_detail_is_cheap_and_part_of_the_version() -> None:
    low = dataclasses.replace(EXTRACT, image_detail="low")
    doc = read_one("photo.png", make_image(4000, 3000), "image/png")
    part = low.request("", attachments=doc.attachments)["input"][0]["content"][1]
    assert part["detail"] == "low" and part_tokens(part) == 85
    assert low.version != EXTRACT.version


def test_text_requests_are_unchanged_by_media_support() -> None:
    body = SUMMARISE.request("plain words")
    assert body["input"] == [{"role": "user", "content": [
        {"type": "input_text", "text": "<document>\nplain words\n</document>"}]}]
