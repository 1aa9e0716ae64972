"""The prefix cache: keys and values of recent sequences, reused when a new prompt starts with them."""

from __future__ import annotations

import collections

import torch

# A cached prefix shorter than this is not worth gathering (a chat template's header, say).
MIN_PREFIX_REUSE = 16


class PrefixEntry:
    """A token sequence and its keys/values (one ``[kv_heads, len, head_dim]`` pair per layer)."""

    __slots__ = ("ids", "keys", "nbytes", "values")

    def __init__(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.ids = ids
        self.keys = keys
        self.values = values
        self.nbytes = sum(t.numel() * t.element_size() for t in (*keys, *values))


class PrefixCache:
    """Keys and values of recent sequences, reused when a new prompt starts with the same tokens.

    A debater's later turn repeats its system prompt, its source excerpts and the question, and a
    conversation's next request repeats the last one and its answer, so most of a later prompt was
    computed before; so does a judge's scoring prompt after its chain of thought.
    Keys carry the rotary embedding of their position, and positions come from the count of real
    tokens, so a cached prefix is valid in any row at any padding. Bounded in bytes, least
    recently used first out; an entry that another entry extends is dropped. Scheduler thread only.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.size = 0
        self._entries: collections.OrderedDict[int, PrefixEntry] = collections.OrderedDict()
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: list[int]) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``ids`` and that length (at most ``len(ids) - 1``)."""
        best: tuple[PrefixEntry | None, int, int] = (None, 0, -1)
        limit = len(ids) - 1  # the last prompt token must be run to get the next token's logits
        for key, entry in self._entries.items():
            shared = common_prefix(entry.ids, ids, limit)
            if shared > best[1]:
                best = (entry, shared, key)
        entry, shared, key = best
        if entry is None or shared < MIN_PREFIX_REUSE:
            return None, 0
        self._entries.move_to_end(key)
        return entry, shared

    def wants(self, ids: list[int], nbytes: int) -> bool:
        """Whether a sequence of ``nbytes`` would be stored (else a caller need not copy it out).

        A sequence that an entry already covers is not: that entry counts as used instead.
        """
        if not self.capacity or len(ids) < MIN_PREFIX_REUSE or nbytes > self.capacity:
            return False
        for key, entry in self._entries.items():
            if common_prefix(entry.ids, ids, len(ids)) == len(ids):
                self._entries.move_to_end(key)
                return False
        return True

    def add(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        entry = PrefixEntry(ids, keys, values)
        if len(ids) < MIN_PREFIX_REUSE or entry.nbytes > self.capacity:
            return
        for key, old in list(self._entries.items()):
            shared = common_prefix(old.ids, ids, len(ids))
            if shared == len(ids):  # already covered by a longer (or equal) entry
                self._entries.move_to_end(key)
                return
            if shared == len(old.ids):  # the new sequence extends this one
                self._drop(key)
        while self._entries and self.size + entry.nbytes > self.capacity:
            self._drop(next(iter(self._entries)))
        self._entries[self._next_key] = entry
        self._next_key += 1
        self.size += entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, key: int) -> None:
        self.size -= self._entries.pop(key).nbytes


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit`` (slice compares run in C)."""
    hi = min(len(a), len(b), limit)
    if hi <= 0 or a[0] != b[0]:
        return 0
    if a[:hi] == b[:hi]:
        return hi
    lo = 1  # a[:lo] == b[:lo] holds; a[:hi] == b[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
