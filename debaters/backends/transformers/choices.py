"""Choice scoring (``choice_probs``): which next tokens stand for a label, and the labels' share of
the next-token probability. The scheduler runs the forward pass (:meth:`Scheduler._score_choices`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from debaters.backends.base import BackendError


def label_tokens(tokenizer: PreTrainedTokenizerBase, label: str) -> list[int]:
    """Distinct first tokens of ``label`` and of ``" " + label`` (their probabilities are summed)."""
    if not label.strip():
        raise BackendError("choice labels must be non-empty", permanent=True)
    ids: list[int] = []
    for variant in (label, " " + label):
        encoded = tokenizer.encode(variant, add_special_tokens=False)
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def label_probs(row_probs: torch.Tensor, candidates: Sequence[list[int]]) -> list[float]:
    """Each label's probability mass (over its tokens), renormalised to sum to 1; even when all are 0."""
    masses = [float(row_probs[ids].sum()) for ids in candidates]
    total = sum(masses)
    return [m / total for m in masses] if total > 0 else [1.0 / len(masses)] * len(masses)
