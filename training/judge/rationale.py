"""Reasoning targets for the judge, built from the texts themselves (no large model exists here).

A target must be honest, grounded in the very ticket and candidates of its example, short (the
embedded model writes ~20 tokens/s on 2 cores and the whole answer must come in ~1.5 s) and
deterministic. It is assembled from facts we can compute, in this order:

1. What the ticket asks for: its key content words (``Asks: card arrive waiting.``). A word is
   "key" when it is not a stop word and few of the shown candidates contain it, so words that every
   candidate shares ("card" in a card-heavy knowledge base) give way to the distinctive ones.
2. What the chosen candidate covers: its topic (a short answer such as a humanised intent name, or
   else the key words of its question), then the key words it shares with the ticket, or "same
   need, other words" when it shares none (a paraphrase).
3. Details that agree or conflict: the ticket's key words a candidate lacks; for a rejected
   candidate also numbers on both sides that differ and a negation on one side only (when the two
   texts otherwise overlap). Numbers longer than 4 digits are ids (order numbers): skipped, since
   they never decide the request and cost a token per digit.
4. Where the verdict goes against the retriever's order (the answer is not candidate 1, or is
   "none"), why candidate 1 loses: what it is about and which key words it lacks that the chosen
   one has (a word both lack explains nothing), else a concrete conflict, else "a different
   request".

The verdict itself is the label's (the answer line the prompt module appends after this text);
the reasoning never claims more than those computed facts. Words are compared after a crude
suffix-stripping stem so "arrived" meets "arrival". About 10-25 words: with SmolLM2's tokenizer
~25 tokens median, ~40 at the 99th percentile (measured on the full build).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from reasoner.prompt import CANDIDATE_REF, NONE_LEAD

# Small English stop list: function words plus customer-service filler that never decides a match.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each either else ever
    few for from further get gets getting got had has have having he her here hers him his how i if
    in into is it its itself just let me might more most much must my myself need needs no nor not
    now of off on once only or other our ours out over own please same she should so some still
    such than thank thanks that the their theirs them then there these they this those through to
    too under until up upon us very want wanted wants was way we were what when where which while
    who whom why will with would yes yet you your yours yourself hi hello hey ok okay also any
    anyone anything someone something tell know like help im ive dont cant id youre there's i'm
    i've i'd i'll it's what's that's where's how's who's let's you're we're they're isn't wasn't
    aren't weren't doesn't didn't won't couldn't shouldn't wouldn't haven't hasn't hadn't
    many use make look try tried trying able possible really just""".split()
) | {"don't", "can't", "cannot", "never", "without"}
NEGATIONS = frozenset("not no never cannot can't don't doesn't didn't isn't wasn't won't without".split())
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
_SUFFIXES = ("ing", "ed", "es", "al", "ly", "s", "e")
# Budgets that keep a target near 35 tokens.
ASK_WORDS = 3
SHARED_WORDS = 2
TOPIC_WORDS = 3
SHORT_ANSWER_WORDS = 6
MAX_NUMBER_DIGITS = 4


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """Crude, deterministic suffix stripping: enough to match arrive / arrived / arrival."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Distinct non-stop words (numbers included) in order of first appearance."""
    seen: dict[str, None] = {}
    for word in words(text):
        word = word.strip("'-")
        if word in STOP_WORDS or (word.isdigit() and len(word) > MAX_NUMBER_DIGITS):
            continue  # long numbers are ids: they never decide the request and cost many tokens
        if len(word) >= 3 or word.isdigit():
            seen.setdefault(word, None)
    return list(seen)


def numbers(text: str) -> set[str]:
    return {w for w in words(text) if _NUMBER.match(w) and len(w) <= MAX_NUMBER_DIGITS}


def negated(text: str) -> bool:
    return any(w in NEGATIONS or w.endswith("n't") for w in words(text))


@dataclass(frozen=True)
class Side:
    """One text (a ticket, or a candidate's question + answer) reduced to what the reasoning cites."""

    text: str
    content: tuple[str, ...]
    stems: frozenset[str]

    @classmethod
    def of(cls, text: str) -> "Side":
        content = tuple(content_words(text))
        return cls(text, content, frozenset(stem(w) for w in content))


def key_words(side: Side, others: Sequence[Side], limit: int) -> list[str]:
    """The side's most distinctive words: words before bare numbers, then contained in the fewest of
    `others`, then earliest."""
    def rank(i: int) -> tuple[bool, int, int]:
        word = side.content[i]
        return word.isdigit(), sum(stem(word) in other.stems for other in others), i

    ranked = sorted(range(len(side.content)), key=rank)
    chosen = sorted(ranked[:limit])  # back to reading order: reads like a phrase
    return [side.content[i] for i in chosen]


def topic(question: str, answer: str, others: Sequence[Side]) -> str:
    """How the reasoning names a candidate: a short answer (an intent name) or its key words."""
    answer_words = answer.split()
    if 0 < len(answer_words) <= SHORT_ANSWER_WORDS:
        return " ".join(answer_words).rstrip(".").lower()
    return " ".join(key_words(Side.of(question), others, TOPIC_WORDS)) or "another request"


def shared(ticket: Side, candidate: Side, limit: int = SHARED_WORDS) -> list[str]:
    return [w for w in ticket.content if stem(w) in candidate.stems][:limit]


def missing(ticket_keys: Sequence[str], candidate: Side) -> list[str]:
    return [w for w in ticket_keys if stem(w) not in candidate.stems]


def conflicts(ticket: Side, candidate: Side) -> list[str]:
    """Concrete disagreements: different numbers on both sides; a negation on one side only of two
    texts that otherwise overlap (only then can "not" flip the request)."""
    found = []
    ticket_numbers, candidate_numbers = numbers(ticket.text), numbers(candidate.text)
    if ticket_numbers and candidate_numbers and not ticket_numbers & candidate_numbers:
        found.append(f"numbers differ ({min(ticket_numbers)} vs {min(candidate_numbers)})")
    overlap = len(ticket.stems & candidate.stems) >= 2
    if overlap and negated(ticket.text) != negated(candidate.text):
        found.append("negation on one side only")
    return found


def _coverage(ticket: Side, candidate: Side, ticket_keys: Sequence[str]) -> str:
    common = shared(ticket, candidate)
    if not common:
        return "same need, other words"
    lacking = missing(ticket_keys, candidate)[:1]
    text = "shares " + ", ".join(common)
    return text + (f"; lacks {lacking[0]}" if lacking else "")


def _why_not(ticket: Side, candidate: Side, ticket_keys: Sequence[str], chosen: Side | None = None) -> str:
    """Why `candidate` loses: ticket key words it lacks (that the chosen one has, when there is a
    chosen one: a word both lack explains nothing), different numbers, a one-sided negation."""
    problems = conflicts(ticket, candidate)
    if chosen is None:
        lacking = missing(ticket_keys, candidate)
    else:
        lacking = [w for w in missing(ticket.content, candidate) if stem(w) in chosen.stems]
    if lacking:
        problems.insert(0, "lacks " + lacking[0])
    return "; ".join(problems[:2]) or "a different request"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "." if text else ""


def _candidate_side(question: str, answer: str) -> Side:
    return Side.of(f"{question} {answer}")


def listwise(ticket: str, candidates: Sequence[tuple[str, str]], choice: int) -> str:
    """Reasoning for a listwise example. `candidates` are (question, answer) in shown order;
    `choice` is the 1-based right candidate, 0 for none."""
    if not 0 <= choice <= len(candidates):
        raise ValueError(f"choice {choice} out of range for {len(candidates)} candidates")
    t = Side.of(ticket)
    sides = [_candidate_side(q, a) for q, a in candidates]
    keys = key_words(t, sides, ASK_WORDS)
    parts = [f"Asks: {' '.join(keys) or 'unclear request'}."]
    if choice:
        q, a = candidates[choice - 1]
        name = topic(q, a, [t, *sides])
        parts.append(f"{CANDIDATE_REF}{choice}] {name}: {_coverage(t, sides[choice - 1], keys)}.")
    if choice != 1 and candidates:
        q, a = candidates[0]
        lead = f"{NONE_LEAD} {CANDIDATE_REF}1]" if choice == 0 else f"{CANDIDATE_REF}1]"
        chosen = sides[choice - 1] if choice else None
        parts.append(f"{lead} {topic(q, a, [t, *sides])}: {_why_not(t, sides[0], keys, chosen)}.")
    if choice == 0:
        parts.append("None fits.")
    return " ".join(parts)


def pairwise(ticket: str, question: str, answer: str, same: bool) -> str:
    """Reasoning for a pairwise example: one ticket, one FAQ, SAME or DIFFERENT."""
    t, c = Side.of(ticket), _candidate_side(question, answer)
    keys = key_words(t, [c], ASK_WORDS)
    parts = [f"Asks: {' '.join(keys) or 'unclear request'}.", f"FAQ: {topic(question, answer, [t])}."]
    if same:
        parts.append(_sentence(_coverage(t, c, keys)))
    else:
        common = shared(t, c)
        lead = f"Shares {', '.join(common)} but " if common else "Shares no key words; "
        parts.append(lead + _why_not(t, c, keys) + ".")
    return " ".join(parts)
