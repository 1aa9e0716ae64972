"""The debater profiles shipped with the app: two styles on the embedded model, configured from settings.

- ``smollm2-embedded`` (the default): the structured speech (``debaters.speech``): the answer in
  words, a quote the model copies from the excerpts it reads, then its argument.
- ``smollm2-evidence-tool``: the same model with the *evidence tool*: a retrieval step lists the
  story sentences that best match the question and the debater's answer, and the model chooses
  which to quote. Each turn records the sentences shown (``meta["evidence_tool"]``).
"""

from __future__ import annotations

from django.conf import settings

from debaters.models import DebaterProfile
from debaters.speech import EVIDENCE, STRUCTURED

DEFAULT_PROFILE = "smollm2-embedded"
EVIDENCE_PROFILE = "smollm2-evidence-tool"


def _embedded(name: str, description: str, style: str) -> DebaterProfile:
    profile, _ = DebaterProfile.objects.get_or_create(
        name=name,
        defaults={
            "description": description,
            "backend": settings.ARENA_DEFAULT_BACKEND,
            "model": settings.ARENA_DEFAULT_MODEL,
            "options": {"device": settings.ARENA_DEFAULT_DEVICE},
            "sampling": {"temperature": settings.ARENA_DEFAULT_TEMPERATURE, "top_p": 0.95},
            "context_tokens": settings.ARENA_DEFAULT_CONTEXT_TOKENS,
            "speech_style": style,
        },
    )
    return profile


def default_profile() -> DebaterProfile:
    """The default debater, created on first use (an existing profile of that name is kept as it is)."""
    return _embedded(
        DEFAULT_PROFILE,
        "SmolLM2-135M-Instruct bundled with the app, run in process on the CPU. Structured speeches: the answer "
        "it defends, a quote it copies from the story excerpts it reads, then its argument.",
        STRUCTURED,
    )


def evidence_profile() -> DebaterProfile:
    """The second shipped debater: the embedded model with the evidence tool."""
    return _embedded(
        EVIDENCE_PROFILE,
        "SmolLM2-135M-Instruct with an evidence tool: a retrieval step (BM25) lists the story sentences that best "
        "match the question and its answer, and the model chooses which one to quote. The sentences shown are "
        "recorded with every turn.",
        EVIDENCE,
    )
