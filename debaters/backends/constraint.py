"""Constrained decoding of a completion: copy from a text, avoid the n-grams of others.

A :class:`TextConstraint` rides on a :class:`~debaters.backends.base.GenerateRequest`. A backend
that honours it (``ModelAPI.honours_constraints``; the in-process ``transformers`` backend) masks,
at every decoding step, the candidate tokens that would break it, and the model samples among the
tokens it still allows; when none of its likeliest candidates is allowed, the completion ends there
(``finish_reason = "stop"``). Backends that cannot (a remote OpenAI-compatible server, vLLM's offline
engine) ignore it; the referee checks the text either way.

Two rules, either or both:

- **copy** (``source``): the completion, up to the start of one of its stop strings, must be a span
  of ``source`` (of one of its passages, when :data:`SEGMENT_BREAK` separates several) starting on
  a word boundary, compared as the referee compares quotes
  (:func:`debaters.quotes.normalize`: case, punctuation and spacing do not matter) and also as
  written (only typographic marks, spacing and the case of its first letter may differ), so that
  the referee's leniency is not a licence to string words of the story together with stray marks
  or odd capitals. A debater's
  quote is written token by token by the model, from the story, and so verifies; the model still
  chooses where it starts, how long it is and when it ends.
- **avoid** (``avoid`` texts and ``avoid_words``): no run of ``avoid_words`` complete words of the
  completion may occur in one of those texts (normalised the same way). Given a debate's earlier
  speeches, a speech cannot repeat its opponent or itself word for word.

Pure Python, no torch: :class:`CompiledConstraint` is built once per request (normalising a story
takes a few milliseconds) and checks a candidate text in microseconds (a substring search on the
normalised story, a set lookup for the n-grams).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from debaters.quotes import _TO_ASCII, normalize

__all__ = ["SEGMENT_BREAK", "CompiledConstraint", "TextConstraint"]

# Apostrophes vanish in normalisation (``don't`` → ``dont``): a text ending in one may still be
# inside a word, unlike one ending in another punctuation mark or a space.
# Between passages of a copy source (excerpts of a story with text left out between them): a copy
# never spans one. A symbol no tokenizer writes on its own, kept as a word by normalisation.
SEGMENT_BREAK = "\u2400"
_APOSTROPHES = frozenset("'’‘`´ʼ′")
_TYPOGRAPHIC = str.maketrans(_TO_ASCII)


def _literal(text: str) -> str:
    """``text`` as written, up to typographic marks and spacing: punctuation and case count here."""
    return " ".join(text.translate(_TYPOGRAPHIC).split())


def _literal_with_offsets(text: str) -> tuple[str, list[int]]:
    """:func:`_literal` of ``text`` and, for each of its characters, the offset in ``text`` just
    after the character it came from (so a match's end maps back to where the source goes on)."""
    out: list[str] = []
    ends: list[int] = []
    space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            space = bool(out)
            continue
        if space:
            out.append(" ")
            ends.append(i)
            space = False
        for c in _TO_ASCII.get(ch, ch):
            out.append(c)
            ends.append(i + 1)
    return "".join(out), ends


@dataclass(frozen=True)
class TextConstraint:
    """What a completion may be; see the module docstring. An empty ``source`` means no copy rule."""

    source: str = ""
    avoid: tuple[str, ...] = ()
    avoid_words: int = 8
    # The completion may not end (a stop string, a line break, the end of sequence) before it holds
    # this many words: a two-word "quote" verifies and says nothing.
    min_words: int = 0

    def compile(self, stops: Sequence[str] = ()) -> CompiledConstraint:
        return CompiledConstraint(self, stops)


def _ends_word(text: str) -> bool:
    """Whether ``text`` ends after a separator (its last word is complete), in normalised terms."""
    last = text[-1:]
    return bool(last) and last not in _APOSTROPHES and not normalize(last)


_QUOTE_TAGS = re.compile(r"<\s*/?\s*quote\s*>", re.IGNORECASE)


def _grams(text: str, n: int) -> set[str]:
    # Tags apart from the words they touch: "<quote>When" is the word "when" after a tag.
    words = normalize(_QUOTE_TAGS.sub(" ", text)).split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


class CompiledConstraint:
    """A :class:`TextConstraint` ready to check candidate completions (``allows``)."""

    def __init__(self, constraint: TextConstraint, stops: Sequence[str] = ()) -> None:
        self.constraint = constraint
        # A copied text ends at a line break too (a quote is one passage of running text).
        self.stops = tuple(s for s in stops if s) + (("\n",) if constraint.source else ())
        # A break is a word of its own, whatever touches it.
        self._text = constraint.source.replace(SEGMENT_BREAK, f"\n{SEGMENT_BREAK}\n")
        # Padded with spaces, so " word ..." finds only spans that start (and end) on word boundaries.
        self._source = f" {normalize(self._text)} " if self._text else ""
        self._literal_source, self._literal_ends = _literal_with_offsets(self._text)
        self._n = max(1, constraint.avoid_words)
        self._avoid: set[str] = set()
        for text in constraint.avoid:
            self._avoid |= _grams(text, self._n)

    def _content(self, text: str) -> str:
        """``text`` without a stop string that it has started (or finished) at its end. A stop
        started and then left (``</qu`` and then anything but ``ote>``) stays content: markup is
        never story text, so the copy rule refuses it."""
        for stop in self.stops:
            at = text.find(stop[0])
            while at >= 0:
                rest = text[at:]
                if stop.startswith(rest) or rest.startswith(stop):
                    return text[:at]
                at = text.find(stop[0], at + 1)
        return text

    def _occurs(self, literal: str) -> str | None:
        """``literal`` as it occurs in the source: as written, or with its first letter in the other
        case (a quote may start a sentence where the story does not); None when it does not occur."""
        if literal in self._literal_source:
            return literal
        other = literal[:1].swapcase() + literal[1:]
        return other if other != literal and other in self._literal_source else None

    def continuations(self, text: str, limit: int = 32, chars: int = 24) -> list[str]:
        """How the source goes on after the copied ``text``: the next ``chars`` characters of the
        source after up to ``limit`` of its occurrences (white space as one space; none after a
        ``text`` ending in white space). A backend offers the model the first token of each, next to
        its own likeliest tokens, so that a copy is never stuck for want of a candidate."""
        content = self._content(text)
        if not self._source or content != text:
            return []
        literal = self._occurs(_literal(content))
        if not literal:
            return []
        found: list[str] = []
        at = self._literal_source.find(literal)
        while at >= 0 and len(found) < limit:
            end = self._literal_ends[at + len(literal) - 1]
            raw = self._text[end : end + 4 * chars].split(SEGMENT_BREAK)[0]
            rest = (" " if raw[:1].isspace() and not content[-1:].isspace() else "") + " ".join(raw.split())
            if rest.strip() and rest[:chars] not in found:
                found.append(rest[:chars])
            at = self._literal_source.find(literal, at + 1)
        return found

    def allows(self, text: str) -> bool:
        """Whether the completion ``text`` (so far) keeps the rules."""
        content = self._content(text)
        if SEGMENT_BREAK in content:
            return False
        key = normalize(content)
        if content != text and len(key.split()) < self.constraint.min_words:
            return False  # a stop started too early
        literal = _literal(content)
        if self._source and literal and self._occurs(literal) is None:
            return False  # not in the story as written (stray marks, odd case)
        if not key:
            return True
        # A text that ends (a stop string started) ends its last word too.
        complete = content != text or _ends_word(content)
        if self._source:
            needle = f" {key} " if complete else f" {key}"
            if needle not in self._source:
                return False
        if self._avoid:
            words = key.split()
            if not complete:
                words = words[:-1]
            # The newest grams only: the older ones were checked when they were written (a token
            # may finish a few words at once, so the last three).
            for end in range(max(self._n, len(words) - 2), len(words) + 1):
                if " ".join(words[end - self._n : end]) in self._avoid:
                    return False
        return True

    def allows_end(self, text: str) -> bool:
        """Whether the completion may end (an end-of-sequence token) after ``text``: it holds
        ``min_words`` words, and a copied text ends on a word boundary of the source."""
        key = normalize(self._content(text))
        if len(key.split()) < self.constraint.min_words:
            return False
        return not (self._source and key) or f" {key} " in self._source
