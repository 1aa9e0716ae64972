"""Judge assignments and verdicts: the master record every export and rating is derived from."""

from __future__ import annotations

import math

from django.conf import settings
from django.db import models
from django.db.models import Q


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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        return f"{self.name}:{self.backend}/{self.model}@{self.prompt_version}"


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
        null=True, blank=True, help_text="AI judges: P(answer 1) in one order minus in the other order."
    )
    judge_label = models.CharField(
        max_length=300, blank=True, help_text="AI judge model and prompt version, or an imported judge's name."
    )
    shown_first = models.PositiveSmallIntegerField()
    p_a = models.FloatField(help_text="Probability the judge gave answers[0].")
    p_b = models.FloatField(help_text="Probability the judge gave answers[1].")
    reason = models.TextField(blank=True)
    time_spent_s = models.FloatField(null=True, blank=True)
    correct = models.BooleanField(help_text="The judge gave the gold answer the higher probability.")
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
