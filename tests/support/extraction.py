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
from typing import Any

from tests.support import ooxml
from tests.support.files import (
    make_blank_pdf,
    make_damaged_pdf,
    make_encrypted_docx,
    make_encrypted_pdf,
    make_mixed_pdf,
    make_pdf,
    make_pdf_form,
)

_WORD = re.compile(r"\w+")

MEMO = ("Quarterly revenue rose eleven percent on stronger subscriptions.\n"
        "Operating costs fell as the data centre moved to the new region.\n"
        "The board approved the budget for the coming year.")
BOARD = "The board meets again in June to review the first quarter against this budget."


@dataclass(frozen=True)
class Sample:
    """One file: its name, bytes, media type, and what a reader would take from it (its
    text, or the code of a refusal the format calls for)."""

    name: str
    data: bytes
    media_type: str
    expected: str
    refused_as: str | None = None
    #: Phrases from each part of the file (header, table, footnote...), in reading order.
    parts: tuple[tuple[str, str], ...] = ()
    #: The pages (from 1) of a PDF with text that are sent as a scan too.
    scanned_pages: tuple[int, ...] = ()


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


def _pdf(name: str, make: Callable[[], bytes], expected: str, refused_as: str | None = None,
         scanned_pages: tuple[int, ...] = ()) -> Sample:
    return Sample(name, make(), "application/pdf", expected, refused_as,
                  scanned_pages=scanned_pages)


def pdf_corpus() -> list[Sample]:
    """PDFs: a text layer over pages, each encryption a PDF writer uses with an empty user
    password (a permissions-only file), one that needs a password, a filled form, a file
    whose cross-reference offset is wrong, pages that are pictures among pages of text, and
    blank pages behind encryption."""
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
        _pdf("report-with-figures.pdf", lambda: make_mixed_pdf(
                [(MEMO, False), ("Figure 1: revenue by region", True), (BOARD, False)]),
             f"{MEMO}\n\nFigure 1: revenue by region\n\n{BOARD}", scanned_pages=(2,)),
        _pdf("slides-a-word-each.pdf", lambda: make_mixed_pdf([("Background", True)] * 4),
             "\n\n".join(["Background"] * 4), scanned_pages=(1, 2, 3, 4)),
        _pdf("blank-pages-encrypted.pdf", lambda: make_blank_pdf(3, password=""), "",
             refused_as="no_text"),
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
    if not long:  # nothing that could be cut: none was
        return 1.0
    return sum(1 for p in long if any(p in line for line in lines)) / len(long)


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _new_docx() -> Any:
    import docx

    return docx.Document()


def _annual_report() -> bytes:
    """Headings, a list, two tables between paragraphs (one with a merged title row), a
    hidden run, a header, and a footer with a page-number field."""
    document = _new_docx()
    section = document.sections[0]
    section.header.paragraphs[0].text = "Northwind Traders | Annual report 2026"
    footer = section.footer.paragraphs[0]
    ooxml.append_inline(footer, ooxml.run("Confidential, page "),
                        ooxml.complex_field("PAGE", "1"))
    document.add_paragraph("Annual report 2026", style="Title")
    document.add_heading("Summary", level=1)
    document.add_paragraph("Revenue grew in every region, led by the north.")
    table = document.add_table(rows=4, cols=3)
    title = table.cell(0, 0).merge(table.cell(0, 2))
    title.text = "Revenue by region (millions)"
    for row, values in enumerate((("Region", "2025", "2026"), ("North", "12.1", "14.8"),
                                  ("South", "9.4", "10.2")), start=1):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    document.add_paragraph("Costs were held flat, as the second table shows.")
    costs = document.add_table(rows=3, cols=2)
    for row, values in enumerate((("Cost", "2026"), ("Staff", "6.0"), ("Premises", "1.3"))):
        for column, value in enumerate(values):
            costs.cell(row, column).text = value
    document.add_heading("Outlook", level=2)
    document.add_paragraph("Open two stores in the east.", style="List Bullet")
    document.add_paragraph("Hire a regional manager.", style="List Bullet")
    ooxml.append(document, ooxml.paragraph(
        ooxml.run("The board will meet in March."),
        ooxml.run(" (check the date with Sam)", hidden=True)))
    return ooxml.saved(document)


ANNUAL_REPORT = """Northwind Traders | Annual report 2026
# Annual report 2026
# Summary
Revenue grew in every region, led by the north.
Revenue by region (millions)
Region | 2025 | 2026
North | 12.1 | 14.8
South | 9.4 | 10.2
Costs were held flat, as the second table shows.
Cost | 2026
Staff | 6.0
Premises | 1.3
## Outlook
- Open two stores in the east.
- Hire a regional manager.
The board will meet in March.
Confidential, page 1"""


def _thesis_chapter() -> bytes:
    """Footnotes and an endnote; a place name in a smart tag and a link in a simple field
    (the sentence the issue saw lose "Carnegie Mellon University School"); a first-page
    header apart from the others."""
    document = _new_docx()
    section = document.sections[0]
    section.different_first_page_header_footer = True
    section.first_page_header.paragraphs[0].text = "Draft for supervisors"
    section.header.paragraphs[0].text = "Chapter 3: Method"
    section.footer.paragraphs[0].text = "University of Example"
    ooxml.add_notes(document, "footnotes", {
        1: "Retrieved in March 2026 from the public mirror.",
        2: "See the appendix for the per-class figures."})
    ooxml.add_notes(document, "endnotes", {1: "The annotators did not see each other's labels."})
    ooxml.append(
        document,
        ooxml.paragraph(
            ooxml.run("The corpus was copied from the "),
            ooxml.smart_tag("Carnegie Mellon University"), ooxml.run(" "),
            ooxml.simple_field('HYPERLINK "https://www.cs.cmu.edu/"',
                               "School of Computer Science"),
            ooxml.run(" archive"), ooxml.note_reference("footnote", 1), ooxml.run(".")),
        ooxml.paragraph(ooxml.run("Each document was read twice"),
                        ooxml.note_reference("endnote", 1),
                        ooxml.run(" by two annotators.")),
        ooxml.paragraph(ooxml.run("Agreement was measured with Cohen's kappa"),
                        ooxml.note_reference("footnote", 2), ooxml.run(".")))
    return ooxml.saved(document)


THESIS_CHAPTER = """Draft for supervisors
Chapter 3: Method
The corpus was copied from the Carnegie Mellon University School of Computer Science \
archive[1].
[1] Retrieved in March 2026 from the public mirror.
Each document was read twice[i] by two annotators.
Agreement was measured with Cohen's kappa[2].
[2] See the appendix for the per-class figures.
University of Example
[i] The annotators did not see each other's labels."""


def _reviewed_contract() -> bytes:
    """Tracked insertions, deletions and a move, a comment on an insertion, and content
    controls: inline and block, filled, and one still showing its prompt."""
    from docx.text.run import Run

    document = _new_docx()
    document.add_heading("Service agreement", level=1)
    ooxml.append(document, ooxml.paragraph(
        ooxml.run("The supplier is "),
        ooxml.content_control(ooxml.run("Globex Corporation"), tag="supplier"),
        ooxml.run(".")))
    payment = document.add_paragraph("Payment is due within ")
    ooxml.append_inline(payment, ooxml.deleted("sixty"), ooxml.inserted("thirty"),
                        ooxml.run(" days of the invoice."))
    thirty = payment._p.xpath("./w:ins/w:r")[0]
    document.add_comment(Run(thirty, payment), text="Finance asked for thirty days.",
                         author="Dana Reyes", initials="DR")
    ooxml.append(
        document,
        ooxml.paragraph(ooxml.run("Notice must be given "), ooxml.moved("in writing ", to=False),
                        ooxml.run("to the registered address"),
                        ooxml.moved(" in writing", to=True), ooxml.run(".")),
        ooxml.content_control(ooxml.paragraph(ooxml.run("Click or tap here to enter text.")),
                              tag="extra terms", placeholder=True),
        ooxml.content_control(
            ooxml.paragraph(ooxml.run("Signed for the supplier by Jordan Lee.")),
            tag="signature"))
    return ooxml.saved(document)


REVIEWED_CONTRACT = """# Service agreement
The supplier is Globex Corporation.
Payment is due within thirty days of the invoice.
Comment by Dana Reyes: Finance asked for thirty days.
Notice must be given to the registered address in writing.
Signed for the supplier by Jordan Lee."""


def _newsletter() -> bytes:
    """Text boxes: one as Word 2010 on writes it (a drawing, with a VML copy of the same
    text for older readers), one VML only, as older Word wrote it."""
    document = _new_docx()
    document.add_heading("Spring newsletter", level=1)
    ooxml.append(
        document,
        ooxml.paragraph(ooxml.run("Our garden project enters its second year."),
                        ooxml.text_box(ooxml.paragraph(ooxml.run(
                            "Volunteers meet every Saturday at nine.")))),
        ooxml.paragraph(ooxml.run("The seed swap returns in April."),
                        ooxml.text_box(ooxml.paragraph(ooxml.run(
                            "Bring seeds in labelled envelopes.")), vml_only=True)))
    document.add_paragraph("Thank you to everyone who helped.")
    return ooxml.saved(document)


NEWSLETTER = """# Spring newsletter
Our garden project enters its second year.
Volunteers meet every Saturday at nine.
The seed swap returns in April.
Bring seeds in labelled envelopes.
Thank you to everyone who helped."""


def _cover_page() -> bytes:
    """Text only in text boxes and the header: the body's one paragraph is empty."""
    document = _new_docx()
    document.sections[0].header.paragraphs[0].text = "Internal"
    ooxml.append(document, ooxml.paragraph(
        ooxml.text_box(ooxml.paragraph(ooxml.run("Harbour Bridge Survey 2026"))),
        ooxml.text_box(ooxml.paragraph(ooxml.run("Prepared for the City Council")))))
    return ooxml.saved(document)


COVER_PAGE = """Internal
Harbour Bridge Survey 2026
Prepared for the City Council"""


def _site_inspection() -> bytes:
    """A report whose content is all in tables nested in a layout table's cells."""
    document = _new_docx()
    layout = document.add_table(rows=2, cols=1)
    top = layout.cell(0, 0)
    details = top.add_table(rows=2, cols=2)
    for row, values in enumerate((("Site", "Riverside depot"), ("Inspector", "M. Osei"))):
        for column, value in enumerate(values):
            details.cell(row, column).text = value
    bottom = layout.cell(1, 0)
    bottom.paragraphs[0].text = "Findings"
    findings = bottom.add_table(rows=2, cols=2)
    for row, values in enumerate((("Roof", "Sound"), ("Drains", "Blocked, clear by Friday"))):
        for column, value in enumerate(values):
            findings.cell(row, column).text = value
    return ooxml.saved(document)


SITE_INSPECTION = """Site | Riverside depot
Inspector | M. Osei
Findings
Roof | Sound
Drains | Blocked, clear by Friday"""


def _application_form() -> bytes:
    """A form laid out with merged cells: a title across the table, values across three
    columns, a label down two rows."""
    document = _new_docx()
    form = document.add_table(rows=5, cols=4)
    form.cell(0, 0).merge(form.cell(0, 3)).text = "Membership application"
    form.cell(1, 0).text = "Name"
    form.cell(1, 1).merge(form.cell(1, 3)).text = "Alice Martin"
    form.cell(2, 0).merge(form.cell(3, 0)).text = "Address"
    form.cell(2, 1).merge(form.cell(2, 3)).text = "12 Harbour Road"
    form.cell(3, 1).merge(form.cell(3, 3)).text = "Upper Dene"
    for column, value in enumerate(("Member since", "2019", "Plan", "Family")):
        form.cell(4, column).text = value
    return ooxml.saved(document)


APPLICATION_FORM = """Membership application
Name | Alice Martin
Address | 12 Harbour Road
Upper Dene
Member since | 2019 | Plan | Family"""


def _blank_form() -> bytes:
    """Nothing to read: rules, an empty table, separators."""
    document = _new_docx()
    document.add_paragraph("________________")
    document.add_table(rows=3, cols=3)
    document.add_paragraph("— * —")
    return ooxml.saved(document)


def _strict(make: Callable[[], bytes]) -> Callable[[], bytes]:
    return lambda: ooxml.to_strict(make())


def docx_corpus() -> list[Sample]:
    """DOCX files made with python-docx, and raw OOXML for what it cannot write: each part
    Word shows (headers, footers, footnotes, endnotes, comments, text boxes, content
    controls, fields, tracked changes, nested tables, merged cells), an encrypted file, a
    Strict Open XML file, and a file with nothing to read."""
    return [Sample(name, make(), DOCX, expected, refused_as, parts) for
            name, make, expected, refused_as, parts in (
        ("annual-report.docx", _annual_report, ANNUAL_REPORT, None, (
            ("header", "Northwind Traders"), ("heading", "# Summary"),
            ("body", "Revenue grew"), ("merged cell", "Revenue by region (millions)\n"),
            ("table", "North | 12.1 | 14.8"), ("body", "Costs were held flat"),
            ("table", "Premises | 1.3"), ("list", "- Open two stores"),
            ("footer with a field", "Confidential, page 1"))),
        ("thesis-chapter.docx", _thesis_chapter, THESIS_CHAPTER, None, (
            ("first-page header", "Draft for supervisors"), ("header", "Chapter 3"),
            ("smart tag and simple field",
             "the Carnegie Mellon University School of Computer Science archive"),
            ("footnote", "[1] Retrieved in March"), ("endnote reference", "twice[i]"),
            ("footnote", "[2] See the appendix"), ("footer", "University of Example"),
            ("endnote", "[i] The annotators"))),
        ("reviewed-contract.docx", _reviewed_contract, REVIEWED_CONTRACT, None, (
            ("content control", "The supplier is Globex Corporation."),
            ("tracked insertion", "within thirty days"),
            ("comment", "Comment by Dana Reyes: Finance asked"),
            ("tracked move", "registered address in writing."),
            ("block content control", "Signed for the supplier"))),
        ("newsletter.docx", _newsletter, NEWSLETTER, None, (
            ("body", "Our garden project"), ("text box", "Volunteers meet"),
            ("body", "The seed swap"), ("VML text box", "Bring seeds"),
            ("body", "Thank you"))),
        ("cover-page.docx", _cover_page, COVER_PAGE, None, (
            ("header", "Internal"), ("text box", "Harbour Bridge Survey"),
            ("text box", "Prepared for the City Council"))),
        ("site-inspection.docx", _site_inspection, SITE_INSPECTION, None, (
            ("nested table", "Site | Riverside depot"), ("nested table", "Inspector | M. Osei"),
            ("cell", "Findings"), ("nested table", "Drains | Blocked, clear by Friday"))),
        ("application-form.docx", _application_form, APPLICATION_FORM, None, (
            ("merged cells", "Membership application\nName | Alice Martin\n"),
            ("vertically merged cell", "Address | 12 Harbour Road\nUpper Dene\n"),
            ("table", "Member since | 2019 | Plan | Family"))),
        ("annual-report-strict.docx", _strict(_annual_report), ANNUAL_REPORT, None, (
            ("header", "Northwind Traders"), ("table", "North | 12.1 | 14.8"),
            ("footer with a field", "Confidential, page 1"))),
        ("blank-form.docx", _blank_form, "", "no_text", ()),
        ("password.docx", lambda: make_encrypted_docx(["Salaries 2026"]), "", "encrypted_docx",
         ()),
    )]


def parts_found(sample: Sample, got: str) -> tuple[int, bool]:
    """How many of ``sample``'s parts are in ``got``, and whether those found are in the
    file's reading order."""
    at = [got.find(phrase) for _, phrase in sample.parts]
    found = [position for position in at if position >= 0]
    return len(found), found == sorted(found)
