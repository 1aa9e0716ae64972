"""Questions, constitutions, debates and their turns."""

from __future__ import annotations

import hashlib
import json

from django.conf import settings as django_settings
from django.db import models
from django.db.models import Q

from arena import identity


class QuestionSet(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    origin = models.CharField(max_length=500, blank=True)
    licence = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Question(models.Model):
    question_set = models.ForeignKey(QuestionSet, on_delete=models.CASCADE, related_name="questions")
    external_id = models.CharField(max_length=200)
    question = models.TextField()
    answers = models.JSONField(help_text="Exactly two answer strings.")
    correct_index = models.PositiveSmallIntegerField()
    source_title = models.CharField(max_length=500)
    source_text = models.TextField()
    source_origin = models.CharField(max_length=500, blank=True)
    licence = models.CharField(max_length=100, blank=True)
    source_hash = models.CharField(
        max_length=64, blank=True, db_index=True, editable=False,
        help_text="The story's identity whatever its tokenisation (arena.identity.story_hash): the split key.",
    )
    fingerprint = models.CharField(
        max_length=64, blank=True, db_index=True, editable=False,
        help_text="Story, question and answers in either order: equal for the same question in any set.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["question_set", "external_id"], name="unique_question_in_set"),
            models.CheckConstraint(condition=Q(correct_index__in=[0, 1]), name="question_correct_index_0_or_1"),
        ]
        ordering = ["question_set_id", "id"]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.question[:60]}"

    def save(self, *args: object, **kwargs: object) -> None:
        # The identities follow the content on every save (an admin edit included).
        self.source_hash = identity.story_hash(self.source_text)
        self.fingerprint = identity.question_fingerprint(self.source_hash, self.question, self.answers)
        if kwargs.get("update_fields") is not None:
            # ``kwargs`` is typed ``object`` (save's signature); Django accepts any iterable of names here.
            kwargs["update_fields"] = {*kwargs["update_fields"], "source_hash", "fingerprint"}  # type: ignore[misc]
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def content_hash(self) -> str:
        """Everything a debate on this question depends on (see ``arena.identity.content_hash``)."""
        return identity.content_hash(self.question, self.answers, self.correct_index, self.source_title, self.source_text)


class Constitution(models.Model):
    """A versioned document of principles and machine-checkable rules.

    A version is immutable once a debate used it; editing makes a new version (see
    ``arena.constitution.new_version``).
    """

    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    principles = models.JSONField(help_text='List of {"id": ..., "text": ...}.')
    rules = models.JSONField(help_text="Machine-checkable rules (limits, quote budget, format).")
    preamble = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="unique_constitution_version")]
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def content_hash(self) -> str:
        payload = json.dumps([self.preamble, self.principles, self.rules], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def is_used(self) -> bool:
        return self.debates.exists()


class Debate(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting"  # an interactive debate waiting for its judge's question
        FINISHED = "finished"
        FAILED = "failed"
        CANCELLED = "cancelled"

    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="debates")
    tournament = models.ForeignKey(
        "arena.Tournament", null=True, blank=True, on_delete=models.CASCADE, related_name="debates"
    )
    tournament_key = models.CharField(
        max_length=300, blank=True, help_text="The pairing's identity within its tournament (no debate twice)."
    )
    protocol = models.CharField(max_length=40, default="debate")
    settings = models.JSONField(default=dict, help_text="Protocol settings: rounds, limits, budgets.")
    constitution = models.ForeignKey(Constitution, on_delete=models.PROTECT, related_name="debates")
    debater_a = models.ForeignKey(
        "debaters.DebaterProfile", on_delete=models.PROTECT, related_name="+", help_text="Argues answers[0]."
    )
    debater_b = models.ForeignKey(
        "debaters.DebaterProfile", on_delete=models.PROTECT, related_name="+", help_text="Argues answers[1]."
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    seed = models.BigIntegerField()
    first_side = models.PositiveSmallIntegerField(
        choices=[(0, "answers[0]"), (1, "answers[1]")],
        default=0,
        help_text="The answer whose debater speaks first in every round (drawn at creation; "
        "debates created before the draw existed have 0, the order they were run in).",
    )
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    question_hash = models.CharField(
        max_length=64, blank=True, editable=False,
        help_text="The question's content hash when the debate was created: what its turns and verdicts refer to.",
    )
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "lease_expires"])]
        constraints = [
            models.UniqueConstraint(
                fields=["tournament", "tournament_key"],
                condition=Q(tournament__isnull=False),
                name="unique_debate_per_tournament_pairing",
            )
        ]

    def __str__(self) -> str:
        return f"Debate {self.pk} on {self.question.external_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.question_hash and self.question_id is not None:
            self.question_hash = self.question.content_hash()
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def rounds(self) -> int:
        return int(self.settings.get("rounds", 2))

    def debater_for_side(self, side: int) -> "models.Model":
        return self.debater_a if side == 0 else self.debater_b

    def is_over(self) -> bool:
        return self.status == self.Status.FINISHED

    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Turn(models.Model):
    """One finished speech. Committed as a whole when generation ends; never updated after."""

    debate = models.ForeignKey(Debate, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    round = models.PositiveIntegerField()
    side = models.PositiveSmallIntegerField(help_text="Index of the answer this speaker argues.")
    text = models.TextField()
    quotes = models.JSONField(default=list, help_text="Quote checks against the full source.")
    prompt = models.JSONField(default=list, help_text="The exact chat messages the debater saw.")
    prompt_hash = models.CharField(max_length=64)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=20, blank=True)
    violations = models.JSONField(default=list, blank=True, help_text="Referee findings: [{rule, message}].")
    truncated = models.BooleanField(default=False)
    model_name = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["debate", "index"], name="unique_turn_index")]
        ordering = ["debate_id", "index"]

    def __str__(self) -> str:
        return f"Debate {self.debate_id} turn {self.index}"

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def verified_quotes(self) -> int:
        return sum(1 for q in self.quotes if q.get("verified"))

    @property
    def cut(self) -> bool:
        """The speech hit its token limit and was cut short (the backend's ``finish_reason``)."""
        return self.finish_reason == "length"


class Candidate(models.Model):
    """One of N sampled speeches for a best-of-N turn, with the AI judge's score."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="candidates")
    index = models.PositiveSmallIntegerField()
    text = models.TextField()
    score = models.FloatField(help_text="AI judge's probability for the speaker's answer with this candidate.")
    chosen = models.BooleanField(default=False)
    completion_tokens = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["turn", "index"], name="unique_candidate_index")]
        ordering = ["turn_id", "index"]


class Revision(models.Model):
    """One critique-and-revision step (SL-CAI) on a turn's draft. Researchers see it; judges never."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="revisions")
    step = models.PositiveSmallIntegerField()
    draft = models.TextField()
    principle_id = models.CharField(max_length=100)
    principle = models.TextField()
    critique = models.TextField()
    revision = models.TextField()
    prompt = models.JSONField(default=list, blank=True, help_text="What the debater saw for the draft.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["turn", "step"], name="unique_revision_step")]
        ordering = ["turn_id", "step"]


class JudgeQuestion(models.Model):
    """A question the judge asked between rounds of an interactive debate; both debaters answer it."""

    debate = models.ForeignKey(Debate, on_delete=models.CASCADE, related_name="judge_questions")
    after_round = models.PositiveSmallIntegerField()
    text = models.TextField()
    asked_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ai_judge = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["debate", "after_round"], name="one_judge_question_per_round")]
        ordering = ["debate_id", "after_round"]


class Tournament(models.Model):
    """Debaters × questions × protocols × judges, every pairing with both sides and both orders."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        PAUSED = "paused"
        CANCELLED = "cancelled"
        FINISHED = "finished"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    config = models.JSONField(help_text="The validated tournament definition (as from its YAML file).")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    stats = models.JSONField(default=dict, blank=True, help_text="Tokens, busy time, throughput.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
