"""The KV cache of the running batch: transformers' ``Cache`` with growable, in-place layers."""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class BufferedLayer(DynamicLayer):
    """A cache layer whose ``keys``/``values`` are views into buffers with room to grow.

    transformers' ``DynamicLayer`` concatenates the whole cache with each new token, copying every
    layer's keys and values at every decoding step; on a CPU that copy costs as much as the
    attention itself. Here a step writes one column in place and the buffers grow by a margin
    only when full. Shapes are ``[batch, kv_heads, seq, head_dim]``; the scheduler reshapes the
    batch with :meth:`select_rows` and :meth:`stack_below`.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self._kbuf is None or self._vbuf is None or self._len + n > self._kbuf.shape[2]:
            self._reserve(key_states, value_states, self._len + n)
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf[:, :, self._len : self._len + n].copy_(key_states)
        self._vbuf[:, :, self._len : self._len + n].copy_(value_states)
        self._len += n
        self._sync()
        return self.keys, self.values  # type: ignore[return-value]

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        capacity = needed + max(64, needed // 4)
        kbuf = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[3]))
        vbuf = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[3]))
        if self._kbuf is not None and self._vbuf is not None and self._len:
            kbuf[:, :, : self._len].copy_(self._kbuf[:, :, : self._len])
            vbuf[:, :, : self._len].copy_(self._vbuf[:, :, : self._len])
        self._kbuf, self._vbuf = kbuf, vbuf

    def _sync(self) -> None:
        assert self._kbuf is not None and self._vbuf is not None
        self.keys = self._kbuf[:, :, : self._len]
        self.values = self._vbuf[:, :, : self._len]

    def get_seq_length(self) -> int:
        return self._len

    def select_rows(self, index: torch.Tensor, trim: int) -> None:
        """Keep batch rows ``index`` and drop the first ``trim`` (all-padding) columns."""
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf = self._kbuf.index_select(0, index)[:, :, trim:]
        self._vbuf = self._vbuf.index_select(0, index)[:, :, trim:]
        self._len -= trim
        self._sync()

    def stack_below(self, other: BufferedLayer, width: int) -> None:
        """Append ``other``'s rows to this batch, both right-aligned in ``width`` columns.

        The padding columns are zero: a masked key gets no weight, but a masked value is still
        multiplied by that zero weight, so it must not be NaN.
        """
        assert self._kbuf is not None and self._vbuf is not None and other._kbuf is not None and other._vbuf is not None
        mine, theirs = self._kbuf.shape[0], other._kbuf.shape[0]
        capacity = width + max(64, width // 4)
        shape = (mine + theirs, self._kbuf.shape[1], capacity, self._kbuf.shape[3])
        kbuf, vbuf = self._kbuf.new_zeros(shape), self._vbuf.new_zeros(shape)
        for rows, layer in ((slice(0, mine), self), (slice(mine, mine + theirs), other)):
            start = width - layer._len
            kbuf[rows, :, start:width].copy_(layer._kbuf[:, :, : layer._len])
            vbuf[rows, :, start:width].copy_(layer._vbuf[:, :, : layer._len])
        self._kbuf, self._vbuf, self._len = kbuf, vbuf, width
        self._sync()

    @classmethod
    def preloaded(cls, kbuf: torch.Tensor, vbuf: torch.Tensor, length: int) -> BufferedLayer:
        """A layer over buffers whose first ``length`` columns are already filled."""
        layer = cls()
        layer.lazy_initialization(kbuf, vbuf)
        layer._kbuf, layer._vbuf, layer._len = kbuf, vbuf, length
        layer._sync()
        return layer

    def row_columns(self, row: int, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of one row's keys and values at ``columns``: ``[kv_heads, len(columns), head_dim]``."""
        assert self._kbuf is not None and self._vbuf is not None
        return self._kbuf[row].index_select(1, columns), self._vbuf[row].index_select(1, columns)


def cache_layers(cache: Cache) -> list[BufferedLayer]:
    layers = list(cache.layers)
    assert all(isinstance(layer, BufferedLayer) for layer in layers)
    return layers  # type: ignore[return-value]


def kv_bytes_per_token(config: object, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token takes over all layers (0 when the config does not say)."""
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads = getattr(config, "num_attention_heads", 0) or 0
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or (getattr(config, "hidden_size", 0) // heads if heads else 0)
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * dtype.itemsize
