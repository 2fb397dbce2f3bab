from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines import DocumentError
from pipelines.documents import (
    SourceDocument,
    discover,
    normalise,
    read_bytes,
    read_source,
    unmatched,
)
from tests.support.files import (
    make_docx,
    make_encrypted_docx,
    make_encrypted_pdf,
    make_pdf,
    make_pdf_bomb,
    make_zip_bomb_docx,
)


def read_one(path: Path, **kw: object) -> SourceDocument | DocumentError:
    results = list(read_source(path, **kw))  # type: ignore[arg-type]
    assert len(results) == 1
    return results[0]


def ok(result: SourceDocument | DocumentError) -> SourceDocument:
    assert isinstance(result, SourceDocument), result
    return result


def failed(result: SourceDocument | DocumentError, code: str) -> DocumentError:
    assert isinstance(result, DocumentError), result
    assert result.code == code, result
    return result


class TestFormats:
    def test_text_and_markdown(self, tmp_path: Path) -> None:
        (tmp_path / "a.txt").write_text("Hello   world.\r\n\r\n\r\n\r\nBye.")
        (tmp_path / "b.md").write_text("# Title\n\nBody text.")
        assert ok(read_one(tmp_path / "a.txt")).text == "Hello world.\n\nBye."
        doc = ok(read_one(tmp_path / "b.md"))
        assert doc.text == "# Title\n\nBody text." and doc.media_type == "text/markdown"

    def test_html_drops_scripts_and_styles(self, tmp_path: Path) -> None:
        (tmp_path / "p.html").write_text(
            "<html><head><style>x{}</style><script>evil()</script></head>"
            "<body><h1>Head</h1><p>Para <b>bold</b>.</p></body></html>")
        text = ok(read_one(tmp_path / "p.html")).text
        assert "Head" in text and "Para" in text and "bold" in text
        assert "evil" not in text and "x{}" not in text

    def test_pdf_text_layer(self, tmp_path: Path) -> None:
        (tmp_path / "r.pdf").write_bytes(make_pdf("Quarterly revenue rose.\nSecond line."))
        text = ok(read_one(tmp_path / "r.pdf")).text
        assert "Quarterly revenue rose." in text and "Second line." in text

    def test_docx(self, tmp_path: Path) -> None:
        (tmp_path / "l.docx").write_bytes(make_docx(["Dear Sam,", "Welcome aboard."]))
        assert ok(read_one(tmp_path / "l.docx")).text == "Dear Sam,\nWelcome aboard."

    def test_jsonl_one_document_per_record_and_bad_lines_fail_alone(self, tmp_path: Path) -> None:
        lines = [json.dumps({"text": "first"}), "{not json", json.dumps({"body": "x"}),
                 json.dumps({"text": "third"})]
        (tmp_path / "r.jsonl").write_text("\n".join(lines))
        results = list(read_source(tmp_path / "r.jsonl"))
        assert [r.text for r in results if isinstance(r, SourceDocument)] == ["first", "third"]
        errors = [r for r in results if isinstance(r, DocumentError)]
        assert [(e.source.rsplit("#", 1)[1], e.code) for e in errors] == [
            ("L2", "bad_record"), ("L3", "bad_record")]
        assert "no string field 'text'" in errors[1].message

    def test_json_array_with_configurable_text_field(self, tmp_path: Path) -> None:
        (tmp_path / "r.json").write_text(json.dumps([{"body": "one"}, {"body": "two"}]))
        results = list(read_source(tmp_path / "r.json", text_field="body"))
        assert [ok(r).source.endswith(f"#{i}") for i, r in enumerate(results, 1)] == [True, True]


class TestBadInput:
    def test_zero_bytes(self, tmp_path: Path) -> None:
        (tmp_path / "e.txt").write_bytes(b"")
        assert "0 bytes" in failed(read_one(tmp_path / "e.txt"), "empty_file").message

    def test_binary_junk_with_a_text_extension(self, tmp_path: Path) -> None:
        (tmp_path / "junk.txt").write_bytes(bytes(range(256)) * 20)
        failed(read_one(tmp_path / "junk.txt"), "binary_content")

    def test_unsupported_type(self, tmp_path: Path) -> None:
        (tmp_path / "x.xyz").write_text("hello")
        assert "'.xyz'" in failed(read_one(tmp_path / "x.xyz"), "unsupported_type").message

    def test_encrypted_pdf(self, tmp_path: Path) -> None:
        (tmp_path / "s.pdf").write_bytes(make_encrypted_pdf("secret text"))
        failed(read_one(tmp_path / "s.pdf"), "encrypted_pdf")

    def test_encrypted_docx_has_its_own_code(self, tmp_path: Path) -> None:
        (tmp_path / "s.docx").write_bytes(make_encrypted_docx(["secret memo"]))
        error = failed(read_one(tmp_path / "s.docx"), "encrypted_docx")
        assert "encrypted with a password" in error.message

    def test_an_old_word_file_named_docx_says_what_it_is(self, tmp_path: Path) -> None:
        # An OLE compound file with no encrypted package: a Word 97-2003 document.
        compound = make_encrypted_docx(["x"]).replace(
            "EncryptedPackage".encode("utf-16-le"), "WordDocument\0\0\0\0".encode("utf-16-le"))
        (tmp_path / "old.docx").write_bytes(compound)
        error = failed(read_one(tmp_path / "old.docx"), "corrupt_file")
        assert "old Word document (.doc)" in error.message

    def test_garbage_and_truncated_pdf(self, tmp_path: Path) -> None:
        (tmp_path / "g.pdf").write_bytes(b"this is not a pdf at all" * 10)
        (tmp_path / "t.pdf").write_bytes(make_pdf("some text here")[:200])
        failed(read_one(tmp_path / "g.pdf"), "corrupt_file")
        assert isinstance(read_one(tmp_path / "t.pdf"), DocumentError)

    def test_docx_zip_bomb_and_corrupt_docx(self, tmp_path: Path) -> None:
        (tmp_path / "bomb.docx").write_bytes(make_zip_bomb_docx(300 * 1024 * 1024))
        (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip")
        failed(read_one(tmp_path / "bomb.docx"), "too_large")
        failed(read_one(tmp_path / "bad.docx"), "corrupt_file")

    def test_pdf_decompression_bomb_is_refused_quickly(self, tmp_path: Path) -> None:
        # A 1 MB file whose one content stream inflates to a gigabyte. pypdf's own text
        # extraction would swallow the limit and call the page empty ("no text layer").
        (tmp_path / "bomb.pdf").write_bytes(make_pdf_bomb(1024))
        error = failed(read_one(tmp_path / "bomb.pdf"), "decompression_bomb")
        assert "page 1" in error.message and "inflates past" in error.message

    def test_a_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        os.mkfifo(tmp_path / "pipe.txt")
        failed(read_one(tmp_path / "pipe.txt"), "unreadable")

    def test_a_file_without_read_permission_is_unreadable(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # chmod 000 does not stop root, and CI runs as root: raise what the kernel would.
        (tmp_path / "secret.txt").write_text("no entry")

        def denied(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", denied)
        error = failed(read_one(tmp_path / "secret.txt"), "unreadable")
        assert "Permission denied" in error.message

    def test_a_dangling_symlink_is_unreadable(self, tmp_path: Path) -> None:
        os.symlink(tmp_path / "gone.txt", tmp_path / "link.txt")
        failed(read_one(tmp_path / "link.txt"), "unreadable")

    def test_file_above_the_size_limit(self, tmp_path: Path) -> None:
        (tmp_path / "big.txt").write_text("a" * 2000)
        failed(read_one(tmp_path / "big.txt", max_bytes=1000), "too_large")

    def test_nul_bytes_are_removed(self, tmp_path: Path) -> None:
        (tmp_path / "n.txt").write_bytes(b"abc\x00def")
        assert ok(read_one(tmp_path / "n.txt")).text == "abcdef"

    @pytest.mark.parametrize(("data", "expected"), [
        ("Café crème à la française, naïve façade.".encode("cp1252"), "Café crème"),
        ("Grüße aus München".encode("utf-16"), "Grüße aus München"),
        ("Plain text in UTF-16 without a byte order mark.".encode("utf-16-le"), "without a byte"),
        ("これは日本語のテキストです。東京で会議があります。".encode("shift_jis"), "日本語"),
    ])
    def test_legacy_encodings(self, data: bytes, expected: str) -> None:
        assert expected in ok(next(read_bytes("x.txt", data, "text/plain"))).text


class TestDiscover:
    def test_folders_recursively_in_order_globs_and_missing_paths(self, tmp_path: Path) -> None:
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "z.txt").write_text("z")
        (tmp_path / "a.txt").write_text("a")
        (tmp_path / "c.md").write_text("c")
        found = list(discover([str(tmp_path), str(tmp_path / "*.md"), str(tmp_path / "nope.txt")]))
        paths = [p for p in found if isinstance(p, Path)]
        assert [p.name for p in paths] == ["a.txt", "c.md", "z.txt"]
        errors = [e for e in found if isinstance(e, DocumentError)]
        assert [e.code for e in errors] == ["not_found"]

    def test_overlapping_inputs_yield_each_file_once(self, tmp_path: Path) -> None:
        (tmp_path / "d" / "sub").mkdir(parents=True)
        for name in ("d/a.txt", "d/sub/b.txt", "c.txt"):
            (tmp_path / name).write_text(name)
        inputs = [tmp_path / "c.txt", tmp_path / "d" / "sub", tmp_path, tmp_path / "d" / "a.txt",
                  tmp_path / "*.txt"]
        found = [p.relative_to(tmp_path).as_posix() for p in discover(str(i) for i in inputs)
                 if isinstance(p, Path)]
        assert found == ["c.txt", "d/sub/b.txt", "d/a.txt"]

    def test_a_symlink_loop_does_not_trap_the_walk(self, tmp_path: Path) -> None:
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "f.txt").write_text("f")
        os.symlink(tmp_path, tmp_path / "d" / "loop")
        assert [p.name for p in discover([str(tmp_path)]) if isinstance(p, Path)] == ["f.txt"]


    def test_unmatched_names_each_input_that_has_no_file(self, tmp_path: Path) -> None:
        (tmp_path / "deep" / "er").mkdir(parents=True)
        (tmp_path / "deep" / "er" / "f.txt").write_text("f")
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        (tmp_path / "a.txt").write_text("a")
        os.symlink(tmp_path / "gone", tmp_path / "dangling")  # read later, as unreadable
        inputs = [tmp_path / "a.txt", tmp_path / "deep", tmp_path / "*.txt",
                  tmp_path / "**" / "f.txt", tmp_path / "dangling", tmp_path / "nope.txt",
                  tmp_path / "*.pdf", tmp_path / "empty", tmp_path / "empty" / "*"]
        assert unmatched(str(i) for i in inputs) == [
            str(tmp_path / "nope.txt"), str(tmp_path / "*.pdf"), str(tmp_path / "empty"),
            str(tmp_path / "empty" / "*")]


class TestNormalise:
    @given(st.text())
    def test_is_idempotent_and_leaves_no_nul(self, text: str) -> None:
        once = normalise(text)
        assert normalise(once) == once
        assert "\x00" not in once

    @given(st.text(alphabet=st.characters() | st.sampled_from(
        list(" \t\n\r\x0b\x0c\x00\x1f\x7f\u00a0\u2003\u2028\u0085ae\u0301\u00e9"))))
    def test_hashes_what_the_line_by_line_version_hashed(self, text: str) -> None:
        # Content hashes of stored documents depend on normalise: a faster version must be
        # the same function. This is the version documents were stored with until issue 8.
        text_nfc = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
        text_nfc = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text_nfc)
        lines = (re.sub(r"[ \t\f\v\u00a0]+", " ", line).strip() for line in text_nfc.split("\n"))
        reference = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        assert normalise(text) == reference

    def test_same_content_same_hash_whatever_the_line_endings(self) -> None:
        a = SourceDocument("a", "text/plain", 1, normalise("x\r\ny  z"))
        b = SourceDocument("b", "text/plain", 1, normalise("x\ny z"))
        assert a.content_hash == b.content_hash
