"""Debater and AI judge profiles: whether one was used, and saving a new one or an edit.

A profile a debate used is a record of who argued or judged: it never changes. Editing such a
profile saves the next version of its lineage as a new row with a new name (default
``<lineage>-v<n>``); debates, tournaments and verdicts keep pointing at the old one. A profile no
debate used yet is edited in place (a typo in a base URL should not cost a version). Validation is
the models' own (``full_clean``: field checks, then the backend's rules in ``clean``), so the pages,
the admin and these services refuse the same things.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from arena.models import Debate, Tournament
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, Verdict

Profile = DebaterProfile | JudgeProfile

# What an edit may change (the rest is identity and bookkeeping).
DEBATER_FIELDS = ("description", "backend", "model", "options", "sampling", "context_tokens", "speech_style")
JUDGE_FIELDS = (
    "description", "backend", "model", "options", "prompt_version", "chain_of_thought", "clamp", "max_cot_tokens",
)


def editable_fields(profile: Profile) -> tuple[str, ...]:
    return DEBATER_FIELDS if isinstance(profile, DebaterProfile) else JUDGE_FIELDS


def is_used(profile: Profile) -> bool:
    """Whether a debate, tournament or verdict refers to ``profile`` (then it may not change)."""
    if isinstance(profile, DebaterProfile):
        return Debate.objects.filter(Q(debater_a=profile) | Q(debater_b=profile)).exists()
    if Verdict.objects.filter(ai_judge=profile).exists():
        return True
    # Best-of-N, critique and interactive debates name their judge profile in their settings.
    if Debate.objects.filter(settings__judge_profile=profile.name).exists():
        return True
    configs = Tournament.objects.values_list("config", flat=True)
    return any(profile.name in (config or {}).get("judges", []) for config in configs)


def debate_count(profile: Profile) -> int:
    if isinstance(profile, DebaterProfile):
        return Debate.objects.filter(Q(debater_a=profile) | Q(debater_b=profile)).count()
    return Verdict.objects.filter(ai_judge=profile).values("debate").distinct().count()


def versions(profile: Profile) -> list[Profile]:
    """Every version of ``profile``'s lineage, newest first."""
    return list(type(profile).objects.filter(lineage=profile.lineage).order_by("-version"))


def create_profile(profile: Profile) -> Profile:
    """Validate and save a new profile (the first version of its own lineage)."""
    profile.lineage = profile.name
    profile.version = 1
    profile.full_clean()
    profile.save()
    return profile


def save_edit(base: Profile, changes: Mapping[str, object], new_name: str = "") -> Profile:
    """Apply ``changes`` to ``base``: in place if no debate used it, else as the next version.

    Raises ``ValidationError`` (keyed by field) when the result is invalid, when nothing changed,
    or when ``new_name`` is taken. ``new_name`` only applies to a new version; empty gives
    ``<lineage>-v<n>``.
    """
    allowed = editable_fields(base)
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValidationError(f"these fields cannot be edited: {', '.join(sorted(unknown))}")
    if all(getattr(base, field) == value for field, value in changes.items()):
        raise ValidationError("nothing changed")
    model = type(base)
    for attempt in range(3):
        with transaction.atomic():
            locked = model.objects.select_for_update().get(pk=base.pk)
            if not is_used(locked):
                for field, value in changes.items():
                    setattr(locked, field, value)
                locked.full_clean()
                locked.save()
                return locked
            latest = model.objects.filter(lineage=locked.lineage).aggregate(v=Max("version"))["v"] or locked.version
            version = latest + 1
            candidate = model(**{field: getattr(locked, field) for field in allowed})
            for field, value in changes.items():
                setattr(candidate, field, value)
            candidate.name = new_name.strip() or f"{locked.lineage}-v{version}"
            candidate.lineage = locked.lineage
            candidate.version = version
            candidate.full_clean()
            try:
                with transaction.atomic():
                    candidate.save()
                    return candidate
            except IntegrityError:
                # Someone saved a version of this lineage at the same moment: number after theirs.
                if attempt == 2:
                    raise ValidationError("another version was being saved at the same time; try again") from None
    raise AssertionError("unreachable")
