"""FAQ pairs and passages, each citing its section, out of an HTML tree: the one reader of DOCX, HTML and
Markdown, which ingest/docx_file.py, html_file.py and markdown_file.py first turn into HTML.

A question is a heading that ends in "?", a <dt>, a <summary> (help centres' accordions), a paragraph that
is wholly bold and ends in "?", or a "Q:" / "Question:" paragraph that ends in "?". Its answer is what
follows up to the next question or heading ("A:" dropped). Everything else becomes passages, chunked within
its section as PDF text is; a table row becomes one passage, "Heading: cell — Heading: cell". Every pair and
passage carries its section: the path of headings above it, "Accounts › Fees".

The tree may come from a hostile page: it is walked without recursion (20,000 nested <div>s), and text is
cleaned of control, zero-width and direction-overriding characters and of blobs (a 2 MB "word" of base64).
Instructions written in the text ("ignore all previous instructions") stay, as data: only the reasoner's
prompt can treat retrieved text as quoted material.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bs4 import NavigableString, Tag
from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest.errors import IngestError

SEPARATOR = " › "
MAX_TEXT = 5_000_000  # characters of text taken from one file; more is refused (split the file)
MAX_WORD = 200  # a "word" longer than this is a blob (base64, "AAAA…"), not text: dropped
MIN_TEXT = 40  # a file with no question and less text than this ("Loading…", a date line) has no content
HEADINGS = {f"h{level}": level for level in range(1, 7)}
CONTAINERS = {"html", "body", "main", "article", "section", "div", "details", "ul", "ol", "dl", "blockquote",
              "figure", "center", "span", "tbody", "thead"}
HEADING, QUESTION, ANSWER, TEXT, ROW = "heading", "question", "answer", "text", "row"
_Q = re.compile(r"^(?:Q|Question)\s*\d{0,4}\s*[:.)]\s*", re.IGNORECASE)
_A = re.compile(r"^(?:A|Answer)\s*[:.)]\s*", re.IGNORECASE)
_INVISIBLE = dict.fromkeys(map(ord, "\ufffd\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e"
                                    "\u2066\u2067\u2068\u2069"))


@dataclass(frozen=True)
class SectionFaq:
    question: str
    answer: str
    section: str
    """Heading path, "Accounts › Fees"; "" before the first heading."""


@dataclass(frozen=True)
class SectionPassage:
    text: str
    section: str


@dataclass(frozen=True)
class Sections:
    """What a document gave: its FAQ pairs and its other passages (table rows included)."""

    pairs: list[SectionFaq]
    passages: list[SectionPassage]


@dataclass(frozen=True)
class _Block:
    kind: str
    text: str
    level: int = 0  # of a heading


def read_tree(path: Path, root: Tag | None, chunk_size: int = 800, chunk_overlap: int = 100) -> Sections:
    """Pairs and passages of the tree under `root`; IngestError when it holds no text, or far too much."""
    state, size = _State(), 0
    for block in _blocks(root) if root is not None else ():
        size += len(block.text)
        if size > MAX_TEXT:
            raise IngestError(path, f"more than {MAX_TEXT:,} characters of text: refused (split the file)")
        state.feed(block)
    state.close_question()
    text = sum(len(text) for _, text in state.loose) + sum(len(row.text) for row in state.rows)
    if not state.pairs and text < MIN_TEXT:
        raise IngestError(path, "no text found (an empty page, or content drawn by JavaScript?)")
    return Sections(state.pairs, _passages(state.loose, chunk_size, chunk_overlap) + state.rows)


# --- the tree as a flat list of blocks ------------------------------------------------------------------


def _blocks(root: Tag) -> Iterator[_Block]:
    """Leaf blocks in document order, with an explicit stack rather than recursion."""
    stack: list = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, NavigableString):
            if type(node) is NavigableString and node.strip():  # not a comment, CDATA or doctype
                yield _Block(TEXT, clean_text(node))
        elif isinstance(node, Tag):
            block = _leaf(node)
            if block is None:
                stack.extend(reversed(node.contents))
            elif isinstance(block, list):
                yield from block
            else:
                yield block


def _leaf(node: Tag) -> _Block | list[_Block] | None:
    """The block a tag stands for, a table's rows, or None for a container to descend into."""
    name = node.name
    if name in HEADINGS:
        return _Block(HEADING, _text(node), HEADINGS[name])
    if name in ("dt", "summary"):
        return _Block(QUESTION, _text(node))
    if name == "dd":
        return _Block(ANSWER, _text(node))
    if name == "table":
        return _table_rows(node)
    if name == "p" and _wholly_bold(node):
        text = _text(node)
        return _Block(QUESTION if text.endswith("?") else TEXT, text)
    if name in CONTAINERS or (name == "li" and node.find(["p", "ul", "ol", "table"])):
        return None
    return _Block(TEXT, _text(node))


def _table_rows(table: Tag) -> list[_Block]:
    rows = [[_text(cell) for cell in row.find_all(["th", "td"])] for row in table.find_all("tr")]
    rows = [row for row in rows if any(row)]
    if len(rows) < 2:
        return [_Block(TEXT, " — ".join(filter(None, row))) for row in rows]
    header = rows[0]
    return [_Block(ROW, " — ".join(f"{name}: {value}" if name else value
                                   for name, value in zip(header, row) if value)) for row in rows[1:]]


def _wholly_bold(node: Tag) -> bool:
    bold = "".join(b.get_text() for b in node.find_all(["strong", "b"], recursive=False))
    return bool(bold.strip()) and " ".join(bold.split()) == " ".join(node.get_text().split())


# --- blocks to pairs and passages -----------------------------------------------------------------------


@dataclass
class _State:
    headings: list[tuple[int, str]] = field(default_factory=list)
    pairs: list[SectionFaq] = field(default_factory=list)
    loose: list[tuple[str, str]] = field(default_factory=list)  # (section, text) not in any answer
    rows: list[SectionPassage] = field(default_factory=list)
    question: str | None = None
    question_section: str = ""
    answer: list[str] = field(default_factory=list)

    def section(self) -> str:
        return SEPARATOR.join(text for _, text in self.headings)

    def feed(self, block: _Block) -> None:
        if not block.text:
            return
        if block.kind == ROW:
            self.rows.append(SectionPassage(block.text, self.section()))
            if self.question is not None:
                self.answer.append(block.text)
        elif block.kind == HEADING and block.text.endswith("?"):
            self.open_question(block.text)
        elif block.kind == HEADING:
            self.close_question()
            kept = [(level, text) for level, text in self.headings if level < block.level and text != block.text]
            self.headings = kept + [(block.level, block.text)]
        elif block.kind == QUESTION or (_Q.match(block.text) and block.text.endswith("?")):
            self.open_question(block.text)
        elif self.question is not None:
            self.answer.append(block.text)
        else:
            self.loose.append((self.section(), block.text))

    def open_question(self, text: str) -> None:
        self.close_question()
        self.question, self.question_section = _Q.sub("", text, count=1), self.section()

    def close_question(self) -> None:
        if self.question is not None:
            answer = _A.sub("", " ".join(self.answer), count=1)
            if answer:
                self.pairs.append(SectionFaq(self.question, answer, self.question_section))
            else:  # a question with no answer is only text
                self.loose.append((self.question_section, self.question))
        self.question, self.answer = None, []


def _passages(loose: list[tuple[str, str]], chunk_size: int, chunk_overlap: int) -> list[SectionPassage]:
    """Consecutive texts of one section joined, then cut as ingest.faq cuts PDF text."""
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    grouped: list[tuple[str, list[str]]] = []
    for section, text in loose:
        if grouped and grouped[-1][0] == section:
            grouped[-1][1].append(text)
        else:
            grouped.append((section, [text]))
    return [SectionPassage(chunk, section) for section, texts in grouped
            for chunk in splitter.split_text("\n".join(texts))]


# --- text hygiene ---------------------------------------------------------------------------------------


def _text(node: Tag) -> str:
    return clean_text(node.get_text(" "))


def clean_text(text: str) -> str:
    """NFC; no control, zero-width or direction-overriding characters; no blobs; whitespace collapsed."""
    text = unicodedata.normalize("NFC", str(text)).translate(_INVISIBLE)
    text = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) != "Cc")
    return " ".join(word for word in text.split() if len(word) <= MAX_WORD)


__all__ = ["SEPARATOR", "SectionFaq", "SectionPassage", "Sections", "clean_text", "read_tree"]
