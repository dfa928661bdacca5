"""Question/answer pairs out of FAQ page text, and plain passages out of everything else.

A generic text splitter cuts FAQ answers in half, and a retriever that returns half an answer is useless, so
FAQ-shaped text is parsed into whole pairs first. Pages are joined before parsing: a pair that crosses a page
break stays whole, and each line remembers its page so that a pair can cite where its question starts.

pypdf wraps long lines and drops blank lines, so questions and answers are rejoined with single spaces.
The document's style is decided once ("Q:/A:" markers, then numbered questions, then plain lines ending in
"?"): choosing one style keeps a "?" inside an answer from being read as a new question in marked files.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest.pdf import PageText

_Q_MARK = re.compile(r"^(?:Q|Question|QUESTION)\s*\d{0,4}\s*[:.)]\s*(?P<rest>.*)$")
_A_MARK = re.compile(r"^(?:A|Answer|ANSWER)\s*[:.)]\s*(?P<rest>.*)$")
_NUMBERED = re.compile(r"^\d{1,4}\s*[.)]\s+(?P<rest>\S.*)$")
_SENTENCE_END = re.compile(r"[.!?:;][\"'”’)\]]*$")
_MAX_QUESTION_LINES = 4
_MAX_HEADING_LINES = 2


@dataclass(frozen=True)
class FaqPair:
    """One question with its whole answer; `page` is where the question starts."""

    question: str
    answer: str
    page: int


@dataclass(frozen=True)
class Passage:
    """A chunk of text that is not FAQ-shaped; `page` is where the chunk starts."""

    text: str
    page: int


@dataclass(frozen=True)
class _Line:
    text: str
    page: int


@dataclass(frozen=True)
class _Question:
    start: int  # index of the question's first line
    answer: int  # index of the answer's first line
    text: str


def split_faq(
    pages: list[PageText], chunk_size: int = 800, chunk_overlap: int = 100
) -> tuple[list[FaqPair], list[Passage]]:
    """Split pages (already stripped of running headers and footers) into FAQ pairs and passages."""
    lines = _lines(pages)
    questions = _find_questions(lines)
    first = questions[0].start if questions else len(lines)
    loose = [lines[: _before_headings(lines, 0, first, keep=0)]]
    pairs: list[FaqPair] = []
    for k, question in enumerate(questions):
        following = questions[k + 1].start if k + 1 < len(questions) else None
        end = len(lines) if following is None else _before_headings(lines, question.answer, following, keep=1)
        answer = _answer_text(lines[question.answer : end])
        if answer:
            pairs.append(FaqPair(question.text, answer, lines[question.start].page))
        else:
            loose.append(lines[question.start : end])
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True
    )
    return pairs, [passage for block in loose for passage in _passages(block, splitter)]


def _lines(pages: list[PageText]) -> list[_Line]:
    return [
        _Line(" ".join(raw.split()), page.number)
        for page in pages
        for raw in page.text.splitlines()
        if raw.strip()
    ]


def _join(texts: list[str]) -> str:
    return " ".join(" ".join(texts).split())


def _answer_text(lines: list[_Line]) -> str:
    if not lines:
        return ""
    marked = _A_MARK.match(lines[0].text)
    first = marked.group("rest") if marked else lines[0].text
    return _join([first] + [line.text for line in lines[1:]])


# --- finding questions -------------------------------------------------------------------------------


def _find_questions(lines: list[_Line]) -> list[_Question]:
    """Use the first style that finds any question: marked, then numbered, then plain."""
    finders: list[Callable[[list[_Line]], list[_Question]]] = [_marked, _numbered, _plain]
    for finder in finders:
        found = finder(lines)
        if found:
            return found
    return []


def _marked(lines: list[_Line]) -> list[_Question]:
    """ "Q: …" / "Question: …" up to the "A: …" / "Answer: …" line (or up to a line ending in "?")."""
    found: list[_Question] = []
    i = 0
    while i < len(lines):
        match = _Q_MARK.match(lines[i].text)
        if match is None:
            i += 1
            continue
        end = _marked_question_end(lines, i)
        if end is None:
            i += 1
            continue
        texts = [match.group("rest")] + [line.text for line in lines[i + 1 : end]]
        found.append(_Question(i, end, _join(texts)))
        i = end
    return found


def _marked_question_end(lines: list[_Line], start: int) -> int | None:
    """Index of the answer's first line: the "A:" line, else the line after the first one ending in "?"."""
    limit = min(len(lines), start + _MAX_QUESTION_LINES + 1)
    for j in range(start + 1, limit):
        if _A_MARK.match(lines[j].text):
            return j
        if _Q_MARK.match(lines[j].text):
            break
    for j in range(start, limit):
        if lines[j].text.endswith("?"):
            return j + 1
        if j > start and _Q_MARK.match(lines[j].text):
            break
    return None


def _numbered(lines: list[_Line]) -> list[_Question]:
    """ "12. How do I …" or "12) …", possibly wrapped, up to the line that ends in "?"."""
    found: list[_Question] = []
    i = 0
    while i < len(lines):
        match = _NUMBERED.match(lines[i].text)
        end = _question_mark_line(lines, i) if match else None
        if match is None or end is None:
            i += 1
            continue
        texts = [match.group("rest")] + [line.text for line in lines[i + 1 : end + 1]]
        found.append(_Question(i, end + 1, _join(texts)))
        i = end + 1
    return found


def _question_mark_line(lines: list[_Line], start: int) -> int | None:
    for j in range(start, min(len(lines), start + _MAX_QUESTION_LINES)):
        if j > start and _NUMBERED.match(lines[j].text):
            return None
        if lines[j].text.endswith("?"):
            return j
    return None


def _plain(lines: list[_Line]) -> list[_Question]:
    """A line ending in "?", extended back over the wrapped lines of the same question.

    The question starts after the previous line that ends a sentence, or after a title-case heading; a start
    that is not capitalised is a "?" in the middle of a paragraph, not a question. A wrapped answer line that
    ends in "?" after a capitalised line can still pass for a question: the marked and numbered shapes, tried
    first, do not have this weakness.
    """
    found: list[_Question] = []
    floor = 0  # the previous answer keeps at least its first line
    for end, line in enumerate(lines):
        if not line.text.endswith("?") or end < floor:
            continue
        start = end
        while (
            start - 1 >= floor
            and end - start + 1 < _MAX_QUESTION_LINES
            and not _SENTENCE_END.search(lines[start - 1].text)
            and not _is_title_heading(lines[start - 1].text)
        ):
            start -= 1
        if not lines[start].text[:1].isupper():
            continue
        found.append(_Question(start, end + 1, _join([line.text for line in lines[start : end + 1]])))
        floor = end + 2
    return found


# --- section headings --------------------------------------------------------------------------------


def _before_headings(lines: list[_Line], low: int, high: int, keep: int) -> int:
    """End of the text before a question, leaving out the section headings ("Orders") just above it."""
    for _ in range(_MAX_HEADING_LINES):
        if high - 1 < low + keep or not _looks_like_heading(lines[high - 1].text):
            break
        high -= 1
    return high


def _looks_like_heading(text: str) -> bool:
    words = text.split()
    return (
        0 < len(words) <= 6
        and len(text) <= 60
        and text[0].isupper()
        and not re.search(r"[.,;:!?]$", text)
        and not _Q_MARK.match(text)
        and not _A_MARK.match(text)
    )


def _is_title_heading(text: str) -> bool:
    """Stricter than _looks_like_heading, for plain FAQs where a heading could pass for a wrapped question."""
    words = [word for word in text.split() if word.isalpha()]
    return _looks_like_heading(text) and all(word[0].isupper() for word in words if len(word) >= 4)


# --- passages ----------------------------------------------------------------------------------------


def _passages(block: list[_Line], splitter: RecursiveCharacterTextSplitter) -> list[Passage]:
    """Chunk loose text, keeping a line break only where a line ends a sentence (a likely paragraph end)."""
    if not block:
        return []
    text, starts = "", []
    for line in block:
        starts.append(len(text))
        ends_paragraph = _SENTENCE_END.search(line.text) or _looks_like_heading(line.text)
        text += line.text + ("\n" if ends_paragraph else " ")
    passages = []
    for document in splitter.create_documents([text.strip()]):
        chunk = document.page_content.strip()
        if chunk:
            line_index = bisect_right(starts, document.metadata.get("start_index", 0)) - 1
            passages.append(Passage(chunk, block[max(0, line_index)].page))
    return passages
