"""Judge assignments and verdicts: the master record every export and rating is derived from."""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.conf import settings
from django.db import models
from django.db.models import Q

from debaters.backends.base import BackendSpec, SamplingParams
from debaters.models import validate_backend_fields, validate_backend_limits


class Assignment(models.Model):
    """A debate given to a human judge, with the answer order this judge sees (random, recorded)."""

    debate = models.ForeignKey("arena.Debate", on_delete=models.CASCADE, related_name="assignments")
    judge = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    shown_first = models.PositiveSmallIntegerField(help_text="Index of the answer shown first to this judge.")
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["debate", "judge"], name="unique_assignment")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.judge} judges debate {self.debate_id}"

    def shown_order(self) -> list[int]:
        return [self.shown_first, 1 - self.shown_first]


class JudgeProfile(models.Model):
    """An AI judge: a model (any backend) bound to the judge role."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    backend = models.CharField(max_length=40, default="transformers")
    model = models.CharField(max_length=300, default="embedded")
    options = models.JSONField(default=dict, blank=True)
    prompt_version = models.CharField(max_length=40, default="v1")
    chain_of_thought = models.BooleanField(default=False, help_text="Reason in text before the answer letter.")
    clamp = models.BooleanField(default=False, help_text="Clamp probabilities to 40–60% (Bai et al. 2022).")
    max_cot_tokens = models.PositiveIntegerField(default=128)
    lineage = models.SlugField(
        max_length=100, blank=True, help_text="The name of the profile's first version; versions share it."
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["lineage", "version"], name="unique_judge_profile_version")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        # A profile created anywhere (get_or_create, the admin) starts its own lineage.
        if not self.lineage:
            self.lineage = self.name
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        validate_backend_fields(self.backend, self.model, self.options)
        # The chain of thought is the one generation a judge's profile sizes (greedy, max_cot_tokens).
        cot = SamplingParams(max_tokens=self.max_cot_tokens, temperature=0.0) if self.chain_of_thought else None
        validate_backend_limits(
            BackendSpec(self.backend, self.model, dict(self.options)), cot, fields={"max_tokens": "max_cot_tokens"}
        )

    @property
    def label(self) -> str:
        return f"{self.name}:{self.backend}/{self.model}@{self.prompt_version}"


class ProfileCheck(models.Model):
    """One "Test" of a debater or AI judge profile: a short request sent through its real backend by a worker.

    ``spec`` is the profile's backend, model, options and sampling as tested (a profile that no
    debate used may still be edited in place, so a check records what it ran). Timings come from
    the worker: ``ready_s`` until the backend could serve (a local model loading), then
    ``first_token_s`` from sending the request to its first text, and ``tokens_per_s`` the
    completion tokens after the first over the time after the first.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"

    debater = models.ForeignKey(
        "debaters.DebaterProfile", null=True, blank=True, on_delete=models.CASCADE, related_name="checks"
    )
    judge = models.ForeignKey(JudgeProfile, null=True, blank=True, on_delete=models.CASCADE, related_name="checks")
    spec = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    prompt = models.TextField()
    reply = models.TextField(blank=True)
    error = models.TextField(blank=True)
    ready_s = models.FloatField(null=True, blank=True, help_text="Seconds until the backend could serve (a model loading).")
    first_token_s = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    choice_probs = models.JSONField(null=True, blank=True, help_text="AI judges: P(A), P(B) as the next token.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(debater__isnull=False, judge__isnull=True) | Q(debater__isnull=True, judge__isnull=False),
                name="profile_check_of_one_profile",
            )
        ]

    def __str__(self) -> str:
        return f"check {self.pk} of {self.debater or self.judge} ({self.status})"

    @property
    def done(self) -> bool:
        return self.status in (self.Status.OK, self.Status.FAILED)


def verdict_correct(probabilities: Sequence[float], gold: int) -> bool | None:
    """Whether probabilities (in the question's stored order) favour the gold answer: True, False,
    or None for an even verdict (50/50 within 1e-9), which is neither right nor wrong."""
    p_gold, p_other = probabilities[gold], probabilities[1 - gold]
    if abs(p_gold - p_other) <= EVEN_TOLERANCE:
        return None
    return p_gold > p_other


# Probabilities this close count as even (the release stores 0.5 as e.g. 0.5000000000000001).
EVEN_TOLERANCE = 1e-9


class Verdict(models.Model):
    class Kind(models.TextChoices):
        HUMAN = "human"
        AI = "ai"

    debate = models.ForeignKey("arena.Debate", on_delete=models.CASCADE, related_name="verdicts")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.HUMAN)
    judge = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="verdicts"
    )
    ai_judge = models.ForeignKey(JudgeProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="verdicts")
    origin = models.CharField(max_length=20, default="arena", help_text="arena, or nyu-2023 for imported verdicts.")
    position_bias = models.FloatField(
        null=True, blank=True, help_text="AI judges: mean P(answer shown first) over both orders − 0.5, i.e. (P(answer 1 | shown first) − P(answer 1 | shown second)) / 2."
    )
    judge_label = models.CharField(
        max_length=300, blank=True, help_text="AI judge model and prompt version, or an imported judge's name."
    )
    shown_first = models.PositiveSmallIntegerField()
    p_a = models.FloatField(help_text="Probability the judge gave answers[0].")
    p_b = models.FloatField(help_text="Probability the judge gave answers[1].")
    reason = models.TextField(blank=True)
    time_spent_s = models.FloatField(null=True, blank=True)
    correct = models.BooleanField(
        null=True,
        help_text="The judge gave the gold answer the higher probability; empty for 50/50 (neither right nor wrong).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["debate", "judge"], condition=Q(judge__isnull=False), name="one_verdict_per_judge"
            ),
            models.UniqueConstraint(
                fields=["debate", "ai_judge"], condition=Q(ai_judge__isnull=False), name="one_verdict_per_ai_judge"
            ),
            models.CheckConstraint(
                condition=Q(p_a__gte=0) & Q(p_a__lte=1) & Q(p_b__gte=0) & Q(p_b__lte=1), name="verdict_probabilities"
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} verdict on debate {self.debate_id}"

    def probabilities(self) -> list[float]:
        return [self.p_a, self.p_b]

    def p_correct(self, correct_index: int) -> float:
        return self.probabilities()[correct_index]

    def log_score(self, correct_index: int) -> float:
        """log2 of the probability given to the gold answer: 0 is perfect, -1 is a coin flip."""
        return math.log2(max(self.p_correct(correct_index), 1e-9))


class Export(models.Model):
    """A preference dataset written by a researcher from the browser (or the command line)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    kind = models.CharField(max_length=20)
    format = models.CharField(max_length=40)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    rows = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.kind}, {self.format})"


class Study(models.Model):
    """A judging study: which debates need human verdicts, how many, and under which exposure rules.

    The scheduler (``judging.scheduler``, ``judging.studies``) hands its debates to judges who click
    "Next debate"; see docs/judging.md for every setting and why.
    """

    class Mode(models.TextChoices):
        LIVE = "live", "live (the judge watches the debate run)"
        OFFLINE = "offline", "offline (a finished transcript)"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.OFFLINE)
    verdicts_per_debate = models.PositiveSmallIntegerField(default=1)
    sample_fraction = models.FloatField(
        default=1.0,
        help_text="Share of the matching debates that need human verdicts, drawn at random once per debate (1: all).",
    )
    skipped = models.JSONField(
        default=list, blank=True, editable=False, help_text="Matching debates the random sample left out (ids)."
    )
    tournament = models.ForeignKey(
        "arena.Tournament", null=True, blank=True, on_delete=models.SET_NULL, related_name="studies"
    )
    protocol = models.CharField(max_length=40, blank=True, help_text="Only debates of this protocol (empty: any).")
    question_set = models.ForeignKey(
        "arena.QuestionSet", null=True, blank=True, on_delete=models.SET_NULL, related_name="studies"
    )
    distinct_story = models.BooleanField(
        default=True, help_text="A judge never judges the same story twice (the reveal shows its gold answer)."
    )
    per_judge_cap = models.PositiveIntegerField(null=True, blank=True, help_text="Debates per judge (empty: no cap).")
    gold_every = models.PositiveSmallIntegerField(
        default=0, help_text="Every n-th debate of a judge is a gold check when one is eligible (0: none)."
    )
    lease_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long a judge holds a debate (empty: ARENA_JUDGE_LEASE_SECONDS)."
    )
    question_deadline_s = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Interactive debates: seconds a judge has to ask the question (empty: ARENA_JUDGE_QUESTION_SECONDS).",
    )
    ai_questioner = models.ForeignKey(
        JudgeProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Asks the question when the judge's deadline passes (empty: the round goes on with none).",
    )
    leaderboard = models.BooleanField(default=False, help_text="Judges see a leaderboard of log scores.")
    open_to_all = models.BooleanField(
        default=True, help_text="Every judge sees the study; off: only its members (accepting its invitation joins)."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="member_studies",
        help_text="Judges who see the study when it is not open to all.",
    )
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.name


class StudyDebate(models.Model):
    """A debate in a study, with its verdict target; ``gold`` marks an easy gold check."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="entries")
    debate = models.ForeignKey("arena.Debate", on_delete=models.CASCADE, related_name="study_entries")
    target = models.PositiveSmallIntegerField()
    gold = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "debate"], name="unique_study_debate")]

    def __str__(self) -> str:
        return f"{self.study} · debate {self.debate_id}"


class StudySlot(models.Model):
    """One human verdict a study debate needs. Claimed under a lease with
    ``select_for_update(skip_locked=True)``; an expired lease returns it to the pool."""

    entry = models.ForeignKey(StudyDebate, on_delete=models.CASCADE, related_name="slots")
    index = models.PositiveSmallIntegerField()
    judge = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    verdict = models.OneToOneField(Verdict, null=True, blank=True, on_delete=models.SET_NULL, related_name="slot")
    handed_out = models.PositiveIntegerField(default=0, help_text="How many times the slot was claimed.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry", "index"], name="unique_study_slot")]
        indexes = [models.Index(fields=["entry", "verdict"])]

    def __str__(self) -> str:
        return f"slot {self.index} of {self.entry}"


class StoryExposure(models.Model):
    """A story a person read outside judging (as a debater or an expert): they never judge it."""

    class Role(models.TextChoices):
        DEBATER = "debater"
        EXPERT = "expert"

    judge = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="story_exposures")
    story = models.CharField(max_length=500, help_text="The story's title, as in Question.source_title.")
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["judge", "story", "role"], name="unique_story_exposure")]

    def __str__(self) -> str:
        return f"{self.judge} read {self.story!r} as {self.role}"


class Invitation(models.Model):
    """A single-use, expiring sign-up link that makes its user a judge (optionally for a study)."""

    token = models.CharField(max_length=64, unique=True)
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitations")
    note = models.CharField(max_length=200, blank=True, help_text="Who it is for (for the researcher's eyes).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitation"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation {self.pk} ({self.note or 'judge'})"


class JudgeStatus(models.Model):
    """A researcher's decisions about a human judge: deactivated (past verdicts kept, flagged) or
    excluded from analysis and exports (e.g. after the chance-level test flagged them)."""

    judge = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judge_status")
    deactivated_at = models.DateTimeField(null=True, blank=True)
    excluded = models.BooleanField(default=False)
    note = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"status of {self.judge}"
