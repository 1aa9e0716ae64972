"""What makes a question the same question, and how another order of its answers maps onto the stored one.

A question's *stored order* (``answers[0]``, ``answers[1]``) is its one canonical order: every
turn's ``side``, every verdict's ``p_a``/``p_b`` and every export refers to it. Anything that arrives
in another order (a NYU room, a re-imported JSONL line) is mapped into it with :func:`answer_order`
and :func:`in_stored_order`.

* :func:`story_hash` identifies a source text whatever its tokenisation: the NYU release stores the
  same story as paragraph chunks in some rooms and as Penn-Treebank tokens (``-LSB-``, ``n't``) in
  others; only letters and digits, lower-cased, are hashed.
* :func:`question_fingerprint` identifies a question across question sets: the story hash, the
  question text and the two answers *in either order* (the gold answer is what the question says,
  not what identifies it).
* :func:`content_hash` is what a debate saw: question, answers in stored order, gold index, title
  and source text, byte for byte. A debate stores it when created (``Debate.question_hash``);
  ``manage.py check_record`` compares.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

_PTB_BRACKETS = {"-LSB-": "[", "-RSB-": "]", "-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}"}
_NOT_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def _squash(text: str) -> str:
    return _NOT_ALNUM.sub("", text).casefold()


def story_hash(source_text: str) -> str:
    """SHA-256 (hex) of the story's letters and digits, lower-cased: one value per story, whatever
    its whitespace, punctuation or tokenisation."""
    for token, char in _PTB_BRACKETS.items():
        source_text = source_text.replace(token, char)
    return hashlib.sha256(_squash(source_text).encode()).hexdigest()


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def question_fingerprint(source_hash: str, question: str, answers: Sequence[str]) -> str:
    """SHA-256 (hex) of story hash, question and the answer *set*: equal for the same question in
    any set and in either answer order."""
    payload = json.dumps([source_hash, _norm(question), sorted(_norm(a) for a in answers)])
    return hashlib.sha256(payload.encode()).hexdigest()


def content_hash(question: str, answers: Sequence[str], correct_index: int, source_title: str, source_text: str) -> str:
    """SHA-256 (hex) of everything a debate on the question depends on, answers in stored order."""
    payload = json.dumps([question, list(answers), correct_index, source_title, source_text])
    return hashlib.sha256(payload.encode()).hexdigest()


def answer_order(stored: Sequence[str], other: Sequence[str]) -> bool | None:
    """Whether ``other`` lists the stored answers reversed (True), in the same order (False), or
    is not the same pair of answers (None). Whitespace and case are ignored."""
    s = [_norm(a) for a in stored]
    o = [_norm(a) for a in other]
    if len(s) != 2 or len(o) != 2 or s[0] == s[1]:
        return None
    if s == o:
        return False
    if s == o[::-1]:
        return True
    return None


def in_stored_order(pair: Sequence[float], reversed_: bool) -> tuple[float, float]:
    """A pair indexed by the other order (probabilities, anything per answer) in the stored order."""
    return (float(pair[1]), float(pair[0])) if reversed_ else (float(pair[0]), float(pair[1]))


def stored_index(index: int, reversed_: bool) -> int:
    """An answer index of the other order (a side, a gold index) as a stored-order index."""
    return 1 - index if reversed_ else index


def story_id(source_hash: str) -> str:
    """A story's short id in exports and on pages: the first 16 hex digits of its story hash."""
    return source_hash[:16]
