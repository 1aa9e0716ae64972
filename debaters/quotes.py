"""Quote extraction and verification for debaters' speeches.

Debaters cite the story inside ``<quote>…</quote>`` elements. A quote is *verified* when its
normalised text occurs verbatim in the normalised story, aligned on word boundaries (the
normalised exact match of Khan et al. 2024). Every quote also gets a fuzzy similarity in
[0, 1] so that a judge can tell a near-miss (a paraphrase, a slip of punctuation inside a word)
from an invention; that score never makes a quote verified.

Everything here is pure Python and safe to run on untrusted model output: tags are found by a
linear scan, the text inside a quote is kept literally (it is never parsed as markup) and the
cost of fuzzy scoring is bounded.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from rapidfuzz import fuzz

__all__ = [
    "QuoteCheck",
    "QuoteSegment",
    "SourceIndex",
    "TextSegment",
    "check_quotes",
    "extract_quotes",
    "normalize",
    "quote_word_count",
    "segments",
]

# Typographic characters mapped to their ASCII counterparts before punctuation is handled. Most
# of them then become separators (or vanish, for apostrophes), but mapping first keeps the rules
# below stated in terms of ASCII and keeps the table the single place to extend.
_TO_ASCII: dict[str, str] = {
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark / typographic apostrophe
    "\u201a": "'",  # single low-9 quotation mark
    "\u201b": "'",  # single high-reversed-9 quotation mark
    "\u2032": "'",  # prime, often typed for an apostrophe
    "\u02bc": "'",  # modifier letter apostrophe
    "\u00b4": "'",  # acute accent, often typed for an apostrophe
    "`": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',  # double prime
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2015": "-",  # horizontal bar
    "\u2212": "-",  # minus sign
    "\u2026": "...",  # ellipsis (NFKC already does this; kept for clarity)
}

# Apostrophes are deleted rather than turned into spaces so that "Maitland's" and "Maitlands",
# "don't" and "dont" agree; every other punctuation mark separates words, so that "then—what"
# and "then - what" agree.
_APOSTROPHE = "'"


@functools.lru_cache(maxsize=8192)
def _normalize_cluster(cluster: str) -> str:
    """Normalise one base character with its combining marks; ``" "`` marks a word break."""
    # Mapped before NFKC too, which would turn an acute accent into a space and a combining mark.
    mapped = "".join(_TO_ASCII.get(ch, ch) for ch in cluster)
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", mapped).casefold():
        for c in _TO_ASCII.get(ch, ch):
            if c == _APOSTROPHE:
                continue
            if c.isspace() or unicodedata.category(c).startswith("P"):
                out.append(" ")
            elif unicodedata.category(c) in ("Cc", "Cf"):
                # Soft hyphens, zero-width spaces and the like are invisible in the source.
                continue
            else:
                out.append(c)
    return "".join(out)


# Derived from _normalize_cluster so that the ASCII fast path cannot drift from the general one.
_ASCII_TABLE: dict[int, str | None] = {}
for _code in range(128):
    _norm = _normalize_cluster(chr(_code))
    _ASCII_TABLE[_code] = _norm if _norm else None
del _code, _norm


def _normalize_with_offsets(text: str) -> tuple[str, list[int], list[int]]:
    """Normalise ``text`` and map each output character back to a span of ``text``.

    Returns ``(normalized, starts, ends)`` where ``normalized[i]`` comes from
    ``text[starts[i]:ends[i]]``. A collapsed run of separators maps to the gap it replaced.
    """
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pending_space = -1
    n = len(text)
    i = 0
    while i < n:
        j = i + 1
        # Combining marks are normalised with their base so that NFKC can compose them.
        while j < n and ord(text[j]) >= 0x300 and unicodedata.combining(text[j]):
            j += 1
        for c in _normalize_cluster(text[i:j]):
            if c == " ":
                if pending_space < 0:
                    pending_space = i
                continue
            if pending_space >= 0:
                if out:
                    out.append(" ")
                    starts.append(pending_space)
                    ends.append(i)
                pending_space = -1
            out.append(c)
            starts.append(i)
            ends.append(j)
        i = j
    return "".join(out), starts, ends


def normalize(text: str) -> str:
    """Normalise ``text`` for quote matching.

    Steps, per character (a base character together with its combining marks):

    1. Unicode NFKC (compatibility forms: full-width letters, ligatures, "…" → "...").
    2. ``str.casefold`` (so "ß" → "ss", "É" → "é").
    3. Typographic quotes, primes, dashes, the minus sign and the ellipsis → ASCII
       (' " - ...); a backtick and an acute accent count as apostrophes.
    4. Apostrophes are deleted; every other Unicode punctuation character (category P*)
       becomes a space. Symbols (category S*: ``$ + < > = ^ | ~`` …) and digits are kept.
    5. Control and format characters (soft hyphen, zero-width space, BOM) are deleted.
    6. Runs of whitespace collapse to one ASCII space; leading/trailing whitespace is removed.

    The result contains only non-space characters separated by single spaces, and
    ``normalize(x) == SourceIndex(x).normalized`` for every string ``x``.
    """
    if text.isascii():
        return " ".join(text.translate(_ASCII_TABLE).split())
    # Stories are mostly ASCII with the odd dash or accent: only the non-ASCII runs (with the
    # character before each, which may be the base of a combining mark) take the slow path.
    parts: list[str] = []
    pos = 0
    for run in _NON_ASCII_RUN.finditer(text):
        parts.append(text[pos : run.start()].translate(_ASCII_TABLE))
        parts.append(_normalize_clusters(run.group()))
        pos = run.end()
    parts.append(text[pos:].translate(_ASCII_TABLE))
    return " ".join("".join(parts).split())


_NON_ASCII_RUN = re.compile(r"[\x00-\x7f]?[^\x00-\x7f]+")


def _normalize_clusters(text: str) -> str:
    """``_normalize_cluster`` over each cluster of ``text``, separators not yet collapsed."""
    out: list[str] = []
    n = len(text)
    i = 0
    while i < n:
        j = i + 1
        while j < n and ord(text[j]) >= 0x300 and unicodedata.combining(text[j]):
            j += 1
        out.append(_normalize_cluster(text[i:j]))
        i = j
    return "".join(out)


@dataclass(frozen=True)
class QuoteCheck:
    """The verdict on one ``<quote>`` element of a speech.

    ``text`` is the literal text between the tags; ``start``/``end`` are the offsets of the whole
    element (tags included) in the speech, so ``speech[start:end]`` is the element.
    ``similarity`` is 1.0 exactly when ``verified``; otherwise it is the fuzzy score of the best
    matching window of the source, capped below 1. ``source_span`` is the ``(start, end)`` of the
    match in the original source when verified, else ``None``.
    """

    text: str
    start: int
    end: int
    verified: bool
    similarity: float
    source_span: tuple[int, int] | None

    def to_dict(self) -> dict[str, str | int | bool | float | list[int] | None]:
        """Return a JSON-serialisable dict; ``from_dict`` reverses it."""
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "verified": self.verified,
            "similarity": self.similarity,
            "source_span": list(self.source_span) if self.source_span is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> QuoteCheck:
        """Rebuild a check from ``to_dict`` output; raises ``ValueError`` on malformed data."""
        text = data.get("text")
        verified = data.get("verified")
        similarity = data.get("similarity")
        raw_span = data.get("source_span")
        if not isinstance(text, str):
            raise ValueError("QuoteCheck.text must be a string")
        if not isinstance(verified, bool):
            raise ValueError("QuoteCheck.verified must be a boolean")
        if isinstance(similarity, bool) or not isinstance(similarity, (int, float)):
            raise ValueError("QuoteCheck.similarity must be a number")
        span: tuple[int, int] | None = None
        if raw_span is not None:
            if not isinstance(raw_span, (list, tuple)) or len(raw_span) != 2:
                raise ValueError("QuoteCheck.source_span must be null or two integers")
            span = (
                _require_int(raw_span[0], "source_span"),
                _require_int(raw_span[1], "source_span"),
            )
        return cls(
            text=text,
            start=_require_int(data.get("start"), "start"),
            end=_require_int(data.get("end"), "end"),
            verified=verified,
            similarity=float(similarity),
            source_span=span,
        )


def _require_int(value: object, name: str) -> int:
    # bool is an int subclass, but True is no offset.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"QuoteCheck.{name} must be an integer")
    return value


_OPEN_TAG = re.compile(r"<\s*quote\s*>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"<\s*/\s*quote\s*>", re.IGNORECASE)


def extract_quotes(speech: str) -> list[tuple[int, int, str]]:
    """Find the ``<quote>…</quote>`` elements of ``speech``, in order.

    Returns ``(start, end, inner_text)`` per element, where ``speech[start:end]`` is the whole
    element. Tags are case-insensitive and may contain whitespace (``< Quote >``, ``</ quote>``).
    Each opening tag pairs with the nearest closing tag after it, so nesting is not supported: in
    ``<quote>a <quote>b</quote> c</quote>`` the first element's text is ``a <quote>b`` and the rest
    is plain text. An opening tag with no closing tag after it is not a quote. Runs in linear
    time, whatever the input.
    """
    found: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        opening = _OPEN_TAG.search(speech, pos)
        if opening is None:
            break
        closing = _CLOSE_TAG.search(speech, opening.end())
        if closing is None:
            # No later opening tag can be closed either.
            break
        found.append((opening.start(), closing.end(), speech[opening.end() : closing.start()]))
        pos = closing.end()
    return found


# Quotes up to this many normalised characters are scored with one partial_ratio over the whole
# story (measured ~0.5 ms against a 35k-character story); longer ones cost roughly quadratically
# that way (~0.4 s at 5k characters), so they are scored around a few anchored windows instead.
_DIRECT_FUZZY_MAX = 256
_ANCHOR_LEN = 64
_ANCHOR_COUNT = 4
# Unverified quotes never reach 1.0, so that "similarity == 1" and "verified" cannot disagree.
_UNVERIFIED_CAP = 0.99


class SourceIndex:
    """A story prepared for quote checks: build once per story, then call ``check`` per quote.

    Holds the original text, its normalisation (see ``normalize``) and, for every normalised
    character, the span of the original it came from.
    """

    def __init__(self, source: str) -> None:
        self._source = source
        self._normalized, self._starts, self._ends = _normalize_with_offsets(source)

    @property
    def source(self) -> str:
        """The original story text."""
        return self._source

    @property
    def normalized(self) -> str:
        """The story as ``normalize`` returns it."""
        return self._normalized

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map the normalised slice ``[start, end)`` (non-empty) to a span of the original text."""
        if not 0 <= start < end <= len(self._normalized):
            raise ValueError(f"bad normalised span ({start}, {end})")
        return self._starts[start], self._ends[end - 1]

    def check(self, quote_text: str) -> tuple[bool, float, tuple[int, int] | None]:
        """Verify one quote against the story.

        Returns ``(verified, similarity, source_span)``. Verified means the normalised quote
        occurs in the normalised story starting and ending on word boundaries; then similarity
        is 1.0 and ``source_span`` is the first such occurrence in the original text. Otherwise
        similarity is the best fuzzy score in [0, 0.99] and ``source_span`` is ``None``. A quote
        that normalises to nothing (empty, blank, punctuation only) scores 0.0.
        """
        needle = normalize(quote_text)
        if not needle:
            return False, 0.0, None
        pos = _find_word_aligned(self._normalized, needle)
        if pos >= 0:
            return True, 1.0, self.original_span(pos, pos + len(needle))
        score = _fuzzy_score(needle, self._normalized) / 100.0
        return False, round(min(score, _UNVERIFIED_CAP), 4), None


def _find_word_aligned(haystack: str, needle: str) -> int:
    """First index of ``needle`` in ``haystack`` on word boundaries, or -1."""
    pos = haystack.find(needle)
    while pos >= 0:
        end = pos + len(needle)
        starts_word = pos == 0 or haystack[pos - 1] == " "
        if starts_word and (end == len(haystack) or haystack[end] == " "):
            return pos
        pos = haystack.find(needle, pos + 1)
    return -1


def _fuzzy_score(needle: str, haystack: str) -> float:
    """Best 0..100 similarity of ``needle`` to a window of ``haystack``, at bounded cost."""
    if not haystack:
        return 0.0
    if len(needle) >= len(haystack):
        # partial_ratio would slide the story over the quote and reward a quote that merely
        # contains the whole story; compare the two whole strings instead.
        return fuzz.ratio(needle, haystack)
    if len(needle) <= _DIRECT_FUZZY_MAX:
        return fuzz.partial_ratio(needle, haystack)
    # Long quote: locate a few short slices of it, then compare the whole quote with the
    # same-length window each slice implies. A quote stitched from distant fragments gets a low
    # score here, since no single window holds all of it.
    best = 0.0
    size = len(needle)
    last = size - _ANCHOR_LEN
    offsets = sorted({last * k // (_ANCHOR_COUNT - 1) for k in range(_ANCHOR_COUNT)})
    for offset in offsets:
        anchor = needle[offset : offset + _ANCHOR_LEN]
        alignment = fuzz.partial_ratio_alignment(anchor, haystack)
        if alignment is None:
            continue
        window_start = min(max(alignment.dest_start - offset, 0), len(haystack) - size)
        best = max(best, fuzz.ratio(needle, haystack[window_start : window_start + size]))
    return best


def check_quotes(speech: str, index: SourceIndex) -> list[QuoteCheck]:
    """Extract every quote of ``speech`` (see ``extract_quotes``) and check it against ``index``."""
    checks: list[QuoteCheck] = []
    for start, end, text in extract_quotes(speech):
        verified, similarity, span = index.check(text)
        checks.append(QuoteCheck(text, start, end, verified, similarity, span))
    return checks


class TextSegment(TypedDict):
    """Plain speech text; ``speech[start:end] == text``."""

    kind: Literal["text"]
    text: str
    start: int
    end: int


class QuoteSegment(TypedDict):
    """A quote element; ``text`` is the literal text between the tags, ``speech[start:end]``
    the whole element, tags included."""

    kind: Literal["quote"]
    text: str
    verified: bool
    similarity: float
    start: int
    end: int


def segments(speech: str, checks: Sequence[QuoteCheck]) -> list[TextSegment | QuoteSegment]:
    """Split ``speech`` into text and quote segments, in order, for rendering as text nodes.

    ``checks`` must be the output of ``check_quotes`` for this very speech (possibly after a
    ``to_dict``/``from_dict`` round trip): ordered, non-overlapping, within bounds, and each
    ``speech[start:end]`` containing its ``text``; otherwise ``ValueError`` is raised. The
    segments tile the speech: each segment's ``speech[start:end]`` follows the previous one with
    no gap, so nothing is lost. Empty text segments are omitted; an empty quote is kept.
    """
    out: list[TextSegment | QuoteSegment] = []
    pos = 0
    for check in checks:
        if not pos <= check.start < check.end <= len(speech):
            raise ValueError(f"quote at ({check.start}, {check.end}) is out of order or bounds")
        if check.text not in speech[check.start : check.end]:
            raise ValueError(f"quote at ({check.start}, {check.end}) does not match the speech")
        if check.start > pos:
            out.append(
                TextSegment(kind="text", text=speech[pos : check.start], start=pos, end=check.start)
            )
        out.append(
            QuoteSegment(
                kind="quote",
                text=check.text,
                verified=check.verified,
                similarity=check.similarity,
                start=check.start,
                end=check.end,
            )
        )
        pos = check.end
    if pos < len(speech):
        out.append(TextSegment(kind="text", text=speech[pos:], start=pos, end=len(speech)))
    return out


def quote_word_count(checks: Sequence[QuoteCheck]) -> int:
    """Words inside quotes, verified or not, counted on normalised text (for a quote budget).

    Counting normalised words means "then—what" is two words and a punctuation-only quote none.
    """
    return sum(len(normalize(check.text).split()) for check in checks)
