"""A corpus of real-shaped documents, each with the text a reader would expect from it, and
the word measures extraction is judged by.

Made with the libraries that make such files (pypdf encrypts as PDF writers do; the form
and damaged files are built as their writers lay them out). Used by the tests of each
format and by ``bench/extraction.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from tests.support.files import (
    make_damaged_pdf,
    make_encrypted_pdf,
    make_pdf,
    make_pdf_form,
)

_WORD = re.compile(r"\w+")

MEMO = ("Quarterly revenue rose eleven percent on stronger subscriptions.\n"
        "Operating costs fell as the data centre moved to the new region.\n"
        "The board approved the budget for the coming year.")


@dataclass(frozen=True)
class Sample:
    """One file: its name, bytes, media type, and what a reader would take from it (its
    text, or the code of a refusal the format calls for)."""

    name: str
    data: bytes
    media_type: str
    expected: str
    refused_as: str | None = None


def words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in _WORD.findall(text))


def recall(expected: str, got: str) -> float:
    """Share of the expected words (with their counts) found in what was extracted."""
    want = words(expected)
    return sum((want & words(got)).values()) / max(1, sum(want.values()))


def precision(expected: str, got: str) -> float:
    """Share of the extracted words that a reader would expect."""
    have = words(got)
    return sum((words(expected) & have).values()) / max(1, sum(have.values()))


def _pdf(name: str, make: Callable[[], bytes], expected: str, refused_as: str | None = None
         ) -> Sample:
    return Sample(name, make(), "application/pdf", expected, refused_as)


def pdf_corpus() -> list[Sample]:
    """PDFs: a text layer over pages, each encryption a PDF writer uses with an empty user
    password (a permissions-only file), one that needs a password, a filled form, and a file
    whose cross-reference offset is wrong."""
    form = {"Applicant": "Alice Martin", "Referee": "Bob Okafor", "Consent": "/Yes"}
    return [
        _pdf("memo-3-pages.pdf", lambda: make_pdf(MEMO, pages=3), "\n\n".join([MEMO] * 3)),
        *[_pdf(f"permissions-only-{algorithm.lower()}.pdf", partial(
               make_encrypted_pdf, MEMO, "", algorithm=algorithm), MEMO)
          for algorithm in ("RC4-40", "RC4-128", "AES-128", "AES-256")],
        _pdf("password-aes-256.pdf",
             lambda: make_encrypted_pdf(MEMO, "s3cret", algorithm="AES-256"), "",
             refused_as="encrypted_pdf"),
        _pdf("filled-form.pdf", lambda: make_pdf_form("Grant application", form),
             "Grant application\nApplicant: Alice Martin\nReferee: Bob Okafor\nConsent: Yes"),
        _pdf("wrong-startxref.pdf", lambda: make_damaged_pdf(MEMO), MEMO),
    ]


NEWS_PAGE = """<!doctype html>
<html lang="en"><head><title>Tides rise | The Harbour Gazette</title>
<style>.menu{display:flex}</style><script>track("view")</script></head>
<body>
<header class="site"><a href="/"><img src="logo.png" alt="The Harbour Gazette"></a>
  <form role="search"><input name="q" placeholder="Search"><button>Go</button></form></header>
<nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li>
  <li><a href="/sport">Sport</a></li><li><a href="/weather">Weather</a></li></ul></nav>
<main><article>
<h1>Spring tides reach the old quay</h1>
<p class="byline">By <a href="/staff/ines">Ines Duarte</a>, harbour correspondent</p>
<p>The highest tides of the year reached the steps of the
   <a href="/places/quay">old quay</a> on Tuesday, supported by a
   <em>strong</em> south-westerly wind and a
   <strong>full moon</strong>.</p>
<p>Harbour staff closed the lower car park at noon and moved
   <span class="num">fourteen</span> boats to the inner basin.</p>
<div style="display: none">Subscribe now for unlimited articles</div>
<p>The council says the new flood gates will be tested before the autumn storms.</p>
</article>
<aside><h2>Related</h2><ul><li><a href="/a">Flood gates approved</a></li></ul></aside>
</main>
<footer><p>&copy; 2026 The Harbour Gazette. <a href="/privacy">Privacy</a></p></footer>
</body></html>"""

NEWS_TEXT = "\n".join([
    "# Spring tides reach the old quay",
    "By Ines Duarte, harbour correspondent",
    "The highest tides of the year reached the steps of the old quay on Tuesday, supported "
    "by a strong south-westerly wind and a full moon.",
    "Harbour staff closed the lower car park at noon and moved fourteen boats to the inner "
    "basin.",
    "The council says the new flood gates will be tested before the autumn storms."])

GUIDE_PAGE = """<html><body>
<div role="navigation"><a href="/docs">Docs</a> / <a href="/docs/install">Install</a></div>
<div hidden>We use cookies to improve this site. Accept all?</div>
<main>
<h1>Installing the sensor kit</h1>
<p>Read every step before you start; the kit's <code>base</code> unit needs mains power.</p>
<h2>Steps</h2>
<ol><li>Mount the base unit on a wall near a socket.</li>
<li>Pair each sensor by holding its button for <b>five</b> seconds.</li>
<li>Check the status light turns green.</li></ol>
<h2>What the lights mean</h2>
<table><thead><tr><th>Light</th><th>Meaning</th></tr></thead>
<tbody><tr><td>Green</td><td>Working</td></tr>
<tr><td>Amber</td><td>Battery low</td></tr>
<tr><td>Red</td><td>No signal from the base</td></tr></tbody></table>
<pre>kit status --all
kit pair 3</pre>
<p>Questions? Write to <a href="mailto:help@example.org">help@example.org</a>.</p>
</main>
<span aria-hidden="true">&#9776;</span>
</body></html>"""

GUIDE_TEXT = """# Installing the sensor kit
Read every step before you start; the kit's base unit needs mains power.
## Steps
1. Mount the base unit on a wall near a socket.
2. Pair each sensor by holding its button for five seconds.
3. Check the status light turns green.
## What the lights mean
Light | Meaning
Green | Working
Amber | Battery low
Red | No signal from the base
kit status --all
kit pair 3
Questions? Write to help@example.org."""

LETTER_PAGE = """<html><body><div class="page">
<header><a href="/">Parish news</a> <a href="/events">Events</a></header>
<div class="content">
<p>Dear neighbours,</p>
<p>The summer fair will be held on the green on
<time datetime="2026-07-11">Saturday 11 July</time> from ten o'clock, with the
<abbr title="Parent Teacher Association">PTA</abbr>'s cake stall, a dog show<sup>1</sup>
and music from the village band.</p>
<address>Village Hall<br>Church Lane<br>Upper Dene</address>
<p>With best wishes,<br>the fair committee</p>
</div>
<footer>Parish news is printed by volunteers. <a href="/contact">Contact</a></footer>
</div></body></html>"""

LETTER_TEXT = """Dear neighbours,
The summer fair will be held on the green on Saturday 11 July from ten o'clock, with the \
PTA's cake stall, a dog show1 and music from the village band.
Village Hall
Church Lane
Upper Dene
With best wishes,
the fair committee"""


def html_corpus() -> list[Sample]:
    """HTML pages of the shapes the web has: a news article inside menus, a search form, a
    related-links aside and a footer, with text hidden by style; a guide with headings,
    lists, a table, code and a hidden cookie banner; a letter laid out in divisions, with
    inline markup and line breaks."""
    return [Sample(name, page.encode(), "text/html", text) for name, page, text in (
        ("news-article.html", NEWS_PAGE, NEWS_TEXT),
        ("install-guide.html", GUIDE_PAGE, GUIDE_TEXT),
        ("parish-letter.html", LETTER_PAGE, LETTER_TEXT),
    )]


def one_line_share(expected: str, got: str, *, min_words: int = 8) -> float:
    """Share of the expected paragraphs of ``min_words`` words or more that come out whole
    on one line."""
    lines = {" ".join(line.split()) for line in got.split("\n")}
    long = [" ".join(p.split()) for p in expected.split("\n") if len(p.split()) >= min_words]
    return sum(1 for p in long if any(p in line for line in lines)) / max(1, len(long))
