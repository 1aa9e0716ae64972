"""The transformers backend's prefix cache: longest-prefix lookup, extension, byte bound, LRU order."""

from __future__ import annotations

import torch

from debaters.backends.transformers.prefix_cache import MIN_PREFIX_REUSE, PrefixCache, common_prefix

LAYERS, HEADS, DIM = 2, 3, 4
TOKEN_BYTES = LAYERS * 2 * HEADS * DIM * 4  # float32 keys and values of one token


def _add(cache: PrefixCache, ids: list[int]) -> None:
    """Keys hold each token's id, so a lookup can check it got the right rows."""
    column = torch.tensor(ids, dtype=torch.float32)[None, :, None].expand(HEADS, len(ids), DIM).contiguous()
    cache.add(ids, [column.clone() for _ in range(LAYERS)], [column.clone() for _ in range(LAYERS)])


def test_common_prefix_finds_the_first_difference() -> None:
    a = list(range(100))
    assert common_prefix(a, a, 1000) == 100
    assert common_prefix(a, a, 40) == 40
    assert common_prefix(a, a[:30] + [-1] + a[31:], 1000) == 30
    assert common_prefix(a, [5, 6], 1000) == 0
    assert common_prefix(a, a[:1] + [-1], 1000) == 1
    assert common_prefix([], a, 10) == 0
    for cut in range(1, 99):
        assert common_prefix(a, a[:cut] + [-1] * 5, 1000) == cut


def test_it_gives_the_longest_prefix_but_never_the_whole_prompt() -> None:
    cache = PrefixCache(10**6)
    base = list(range(1000, 1040))
    _add(cache, base)
    _add(cache, list(range(2000, 2050)))
    entry, shared = cache.longest(base + [7, 8, 9])
    assert entry is not None and shared == 40
    assert entry.keys[0][0, :shared, 0].tolist() == [float(t) for t in base]
    # The same prompt again: everything but the last token, which must run to give logits.
    assert cache.longest(base)[1] == 39
    # Too short a match is not worth it.
    assert cache.longest(base[: MIN_PREFIX_REUSE - 1] + [1, 2, 3]) == (None, 0)
    assert cache.longest([1, 2, 3] + base) == (None, 0)


def test_an_extension_replaces_its_prefix_and_a_covered_sequence_is_not_stored_twice() -> None:
    cache = PrefixCache(10**6)
    turn_one = list(range(100, 140))
    _add(cache, turn_one)
    _add(cache, turn_one + list(range(500, 520)))  # the next turn: prompt + answer
    assert len(cache) == 1 and cache.size == 60 * TOKEN_BYTES
    _add(cache, turn_one[:30])  # already covered
    assert len(cache) == 1
    entry, shared = cache.longest(turn_one + list(range(500, 510)) + [9, 9])
    assert entry is not None and shared == 50


def test_it_stays_within_its_bytes_dropping_the_least_recently_used() -> None:
    cache = PrefixCache(3 * 20 * TOKEN_BYTES)
    first, second, third, fourth = ([k * 1000 + i for i in range(20)] for k in range(1, 5))
    for ids in (first, second, third):
        _add(cache, ids)
    assert cache.size == 3 * 20 * TOKEN_BYTES
    assert cache.longest(first + [1])[1] == 20  # touch: `second` is now the oldest
    _add(cache, fourth)
    assert cache.size <= cache.capacity and len(cache) == 3
    assert cache.longest(second + [1]) == (None, 0)
    assert cache.longest(first + [1])[1] == 20 and cache.longest(fourth + [1])[1] == 20


def test_a_zero_capacity_cache_keeps_nothing() -> None:
    cache = PrefixCache(0)
    _add(cache, list(range(40)))
    assert len(cache) == 0 and cache.longest(list(range(50))) == (None, 0)


def test_it_says_what_it_would_not_store_so_nothing_is_copied_for_nothing() -> None:
    cache = PrefixCache(30 * TOKEN_BYTES)
    _add(cache, list(range(100, 120)))
    assert cache.wants(list(range(100, 110)), 10 * TOKEN_BYTES) is False  # covered
    assert cache.wants(list(range(300, 340)), 40 * TOKEN_BYTES) is False  # bigger than the whole cache
    assert cache.wants(list(range(300, 310)), 10 * TOKEN_BYTES) is False  # too short to be worth it
    assert cache.wants(list(range(300, 325)), 25 * TOKEN_BYTES) is True
    assert PrefixCache(0).wants(list(range(300, 325)), 0) is False


def test_a_sequence_too_big_to_store_keeps_the_prefix_it_extends() -> None:
    cache = PrefixCache(30 * TOKEN_BYTES)
    turn_one = list(range(100, 120))
    _add(cache, turn_one)
    _add(cache, turn_one + list(range(500, 520)))  # 40 tokens: more than the cache holds
    assert len(cache) == 1 and cache.longest(turn_one + [1])[1] == 20
    cache.clear()
    assert len(cache) == 0 and cache.size == 0
