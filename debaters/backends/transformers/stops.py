"""Stop strings in streamed text: where one starts, and how much text to hold back."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def find_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    """Index of the earliest stop string in ``text`` at or after ``start`` (held-back text never precedes it)."""
    best: int | None = None
    for stop in stops:
        index = text.find(stop, start)
        if index != -1 and (best is None or index < best):
            best = index
    return best


def partial_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    """Length of the longest suffix of ``text[start:]`` that could begin a stop string."""
    hold = 0
    tail_len = len(text) - start
    for stop in stops:
        for k in range(min(len(stop) - 1, tail_len), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold
