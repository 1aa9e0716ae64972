"""Pick the passages of a story that a debater should see, within a token budget.

A small model cannot read a 6–8k-token story, so each debater is shown the passages most
relevant to the question and to the answer it defends. Passages are whole sentences grouped
into paragraph-sized pieces, ranked with Okapi BM25 against the query, taken greedily while the
rendered excerpt fits the budget, and returned in story order so the excerpt reads as the story
does. Everything is deterministic: equal scores are broken by position in the story.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from debaters.quotes import normalize

__all__ = [
    "EXCERPT_SEPARATOR",
    "Passage",
    "estimate_tokens",
    "evidence_sentences",
    "render_excerpts",
    "score_passages",
    "select_passages",
    "split_passages",
]


@dataclass(frozen=True)
class Passage:
    """A contiguous piece of a story: ``text == story[start:end]``.

    ``index`` is the passage's position among ``split_passages(story)`` (0-based), which orders
    passages as the story does.
    """

    index: int
    start: int
    end: int
    text: str


EXCERPT_SEPARATOR = "[…]"
_JOIN = "\n\n"
_GAP = f"\n\n{EXCERPT_SEPARATOR}\n\n"

# Ends of sentences: terminal punctuation, then any closing quotes or brackets, then whitespace.
_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)""")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_WORD = re.compile(r"\S+")
# A period after one of these, or after a single letter (initials, "U.S."), ends no sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr prof rev gen col capt lt sgt maj cmdr adm gov sen rep hon mt ft"
    " vs etc no vol fig inc ltd co".split()
)
# A paragraph that reaches this share of the target closes the passage at its end, so passages
# follow the author's paragraphs when they can.
_PARAGRAPH_CLOSE_SHARE = 0.5
# A "sentence" longer than this many targets (verse, lists, text without punctuation) is cut
# at line breaks or words, so one run-on cannot swallow the budget.
_LONG_SENTENCE_FACTOR = 2


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    words: int
    opens_paragraph: bool


def split_passages(text: str, target_words: int = 120) -> list[Passage]:
    """Split ``text`` into passages of roughly ``target_words`` words, in story order.

    Passages are made of whole sentences and prefer to end where a paragraph (blank line) ends.
    A passage exceeds ``target_words`` only when one sentence does; a sentence longer than
    twice the target is the one thing cut, at line breaks if it has them, else between words.
    Passages do not overlap, carry no leading or trailing whitespace, and together hold every
    non-whitespace character of ``text``. Blank text gives ``[]``.
    """
    if target_words < 1:
        raise ValueError("target_words must be at least 1")
    groups: list[list[_Unit]] = []
    words = 0
    for unit in _units(text, target_words):
        if (
            not groups
            or words + unit.words > target_words
            or (unit.opens_paragraph and words >= target_words * _PARAGRAPH_CLOSE_SHARE)
        ):
            groups.append([])
            words = 0
        groups[-1].append(unit)
        words += unit.words
    return [
        Passage(i, group[0].start, group[-1].end, text[group[0].start : group[-1].end])
        for i, group in enumerate(groups)
    ]


def _units(text: str, target_words: int) -> list[_Unit]:
    """Sentence spans of ``text`` (stripped, long ones cut), flagged when opening a paragraph."""
    units: list[_Unit] = []
    paragraph_breaks = [(m.start(), m.end()) for m in _BLANK_LINE.finditer(text)]
    paragraph_breaks.append((len(text), len(text)))
    para_start = 0
    for para_end, next_start in paragraph_breaks:
        first = True
        for start, end in _sentences(text, para_start, para_end):
            for piece_start, piece_end in _cut_long(text, start, end, target_words):
                words = len(_WORD.findall(text, piece_start, piece_end))
                units.append(_Unit(piece_start, piece_end, words, first))
                first = False
        para_start = next_start
    return units


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Stripped sentence spans of ``text[start:end]``."""
    spans: list[tuple[int, int]] = []
    sentence_start = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if not _ends_sentence(text, match.start(), match.end(), end):
            continue
        spans.append((sentence_start, match.end()))
        sentence_start = match.end()
    spans.append((sentence_start, end))
    stripped: list[tuple[int, int]] = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            stripped.append((s, e))
    return stripped


def _ends_sentence(text: str, mark: int, after: int, limit: int) -> bool:
    """Whether the terminal punctuation at ``text[mark:after]`` ends a sentence."""
    nxt = after
    while nxt < limit and text[nxt].isspace():
        nxt += 1
    if nxt >= limit:
        return True
    # '"Where?" he asked.' goes on after the question mark.
    if text[nxt].islower():
        return False
    if text[mark] == "." and after - mark == 1:
        word_start = mark
        while word_start > 0 and text[word_start - 1].isalpha():
            word_start -= 1
        word = text[word_start:mark]
        if len(word) == 1 or word.casefold() in _ABBREVIATIONS:
            return False
    return True


def _cut_long(text: str, start: int, end: int, target_words: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence into pieces of at most ``target_words`` words, preferring line
    breaks; a sentence of at most twice the target is returned whole."""
    limit = _LONG_SENTENCE_FACTOR * target_words
    if len(_WORD.findall(text, start, end)) <= limit:
        return [(start, end)]
    pieces: list[tuple[int, int]] = []
    piece: list[tuple[int, int]] = []
    piece_words = 0
    for line in re.finditer(r"[^\n]*\S[^\n]*", text[start:end]):
        line_start, line_end = start + line.start(), start + line.end()
        words = [(m.start(), m.end()) for m in _WORD.finditer(text, line_start, line_end)]
        if piece and piece_words + len(words) > target_words:
            pieces.append((piece[0][0], piece[-1][1]))
            piece, piece_words = [], 0
        piece.extend(words)
        piece_words += len(words)
        if piece_words > limit:
            # One enormous line: no line break to cut at, so cut between words.
            pieces.extend(_cut_words(piece, target_words))
            piece, piece_words = [], 0
    if piece:
        pieces.append((piece[0][0], piece[-1][1]))
    return pieces


def _cut_words(words: list[tuple[int, int]], target_words: int) -> list[tuple[int, int]]:
    return [
        (words[i][0], words[min(i + target_words, len(words)) - 1][1])
        for i in range(0, len(words), target_words)
    ]


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: 1.3 tokens per whitespace-separated word, rounded up."""
    return math.ceil(len(text.split()) * 1.3)


_STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    one ones say said did does story passage text according""".split()
)
_TERM = re.compile(r"[^\W_]+")


def _stem(term: str) -> str:
    # Just enough to match "planets"/"planet" and "traveling"/"travel" between a question and
    # the story; a full stemmer would be a dependency for little gain at passage granularity.
    if len(term) > 4 and term.endswith("ies"):
        return term[:-3] + "y"
    if len(term) > 5 and term.endswith("ing"):
        return term[:-3]
    if len(term) > 4 and term.endswith("ed"):
        return term[:-2]
    if len(term) > 3 and term.endswith("s") and not term.endswith(("ss", "us", "is")):
        return term[:-1]
    return term


def _terms(text: str) -> list[str]:
    # Single characters (initials, list markers, the "s" of "U.S.") carry no topic.
    return [
        _stem(term)
        for term in _TERM.findall(normalize(text))
        if len(term) > 1 and term not in _STOP_WORDS
    ]


def score_passages(
    passages: Sequence[Passage], query: str, k1: float = 1.5, b: float = 0.75
) -> list[float]:
    """Okapi BM25 score of each passage against ``query`` (stop words dropped, light stemming).

    The collection is ``passages`` itself; each distinct query term counts once. Scores are
    non-negative; a passage sharing no term with the query scores 0.
    """
    docs = [Counter(_terms(p.text)) for p in passages]
    if not docs:
        return []
    query_terms = sorted(set(_terms(query)))
    n_docs = len(docs)
    lengths = [sum(doc.values()) for doc in docs]
    avg_length = (sum(lengths) / n_docs) or 1.0
    scores = [0.0] * n_docs
    for term in query_terms:
        df = sum(1 for doc in docs if term in doc)
        if df == 0:
            continue
        # The "+1" (Lucene's variant) keeps idf positive for terms in most passages.
        idf = math.log((n_docs - df + 0.5) / (df + 0.5) + 1.0)
        for i, doc in enumerate(docs):
            tf = doc.get(term, 0)
            if tf:
                norm = k1 * (1.0 - b + b * lengths[i] / avg_length)
                scores[i] += idf * tf * (k1 + 1.0) / (tf + norm)
    return scores


def select_passages(
    source: str,
    query: str,
    budget_tokens: int,
    count_tokens: Callable[[str], int] | None = None,
    *,
    target_words: int = 120,
    k1: float = 1.5,
    b: float = 0.75,
) -> list[Passage]:
    """Choose the passages of ``source`` most relevant to ``query``, in story order.

    ``query`` is what the debater must argue about (the question and its assigned answer).
    ``count_tokens`` counts a text's tokens (pass the debater's tokenizer); it defaults to
    ``estimate_tokens``. The contract is ``count_tokens(render_excerpts(result)) <=
    budget_tokens``, so the separators between excerpts are paid for:

    - If the whole story fits, the result is one passage holding all of ``source``
      (index 0, start 0, end ``len(source)``).
    - Otherwise passages (``split_passages(source, target_words)``) are ranked by BM25, ties
      broken by position, and taken greedily in rank order, skipping any whose tokens (plus a
      separator's) would overflow the sum so far; then sorted by position. Should the rendered
      excerpt still overflow (tokenizers are not additive), the lowest-ranked picks are dropped
      until it fits.
    - If even the best-ranked passage alone exceeds the budget, the result is that passage
      truncated at a word boundary to the longest prefix that fits (``end`` shortened), or
      ``[]`` when not one word fits.
    """
    counter = count_tokens or estimate_tokens
    if budget_tokens <= 0 or not source.strip():
        return []
    if counter(source) <= budget_tokens:
        return [Passage(0, 0, len(source), source)]
    passages = split_passages(source, target_words)
    scores = score_passages(passages, query, k1, b)
    ranked = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
    best = passages[ranked[0]]
    if counter(best.text) > budget_tokens:
        return _truncate(best, budget_tokens, counter)

    costs = [counter(p.text) for p in passages]
    join_cost = counter(_GAP)
    chosen: list[int] = []
    estimate = 0
    for i in ranked:
        extra = costs[i] + (join_cost if chosen else 0)
        if estimate + extra <= budget_tokens:
            chosen.append(i)
            estimate += extra
    # Tokenizers are not additive across joins, so the rendered text is what must fit; it
    # almost always does at once (one call on the whole excerpt rather than one per candidate).
    # Dropping the lowest-ranked pick ends at the best passage alone, which fits.
    while counter(render_excerpts([passages[i] for i in sorted(chosen)])) > budget_tokens:
        chosen.pop()
    return [passages[i] for i in sorted(chosen)]


def _truncate(passage: Passage, budget_tokens: int, counter: Callable[[str], int]) -> list[Passage]:
    word_ends = [m.end() for m in _WORD.finditer(passage.text)]
    lo, hi = 0, len(word_ends)  # invariant: a prefix of `lo` words fits (0 words trivially)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter(passage.text[: word_ends[mid - 1]]) <= budget_tokens:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return []
    end = word_ends[lo - 1]
    return [Passage(passage.index, passage.start, passage.start + end, passage.text[:end])]


def render_excerpts(passages: Sequence[Passage]) -> str:
    """Join passages for a prompt: a blank line between passages that follow each other in the
    story, and a line holding only ``EXCERPT_SEPARATOR`` ("[…]") where text was left out
    between them. ``passages`` should be in story order, as ``select_passages`` returns them.
    """
    parts: list[str] = []
    for k, passage in enumerate(passages):
        if k:
            parts.append(_JOIN if passage.index == passages[k - 1].index + 1 else _GAP)
        parts.append(passage.text)
    return "".join(parts)


def evidence_sentences(source: str, query: str, count: int, target_words: int = 25) -> list[str]:
    """The evidence tool: the ``count`` short passages (a sentence or two, about ``target_words``
    words) of ``source`` that best match ``query`` by BM25, best first, with line breaks joined.

    Each returned string is a verbatim piece of ``source`` up to whitespace, so a quote copied
    from it verifies. Passages sharing no term with the query are not returned.
    """
    passages = split_passages(source, target_words)
    scores = score_passages(passages, query)
    ranked = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
    return [" ".join(passages[i].text.split()) for i in ranked[:count] if scores[i] > 0]
