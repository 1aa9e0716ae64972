"""The default debater profile: the embedded model, configured from settings."""

from __future__ import annotations

from django.conf import settings

from debaters.models import DebaterProfile

DEFAULT_PROFILE = "smollm2-embedded"


def default_profile() -> DebaterProfile:
    profile, _ = DebaterProfile.objects.get_or_create(
        name=DEFAULT_PROFILE,
        defaults={
            "description": "SmolLM2-135M-Instruct bundled with the app, run in process on the CPU.",
            "backend": settings.ARENA_DEFAULT_BACKEND,
            "model": settings.ARENA_DEFAULT_MODEL,
            "options": {"device": settings.ARENA_DEFAULT_DEVICE},
            "sampling": {"temperature": settings.ARENA_DEFAULT_TEMPERATURE, "top_p": 0.95},
            "context_tokens": settings.ARENA_DEFAULT_CONTEXT_TOKENS,
        },
    )
    return profile
