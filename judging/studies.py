"""Judging studies: the debates that need human verdicts, and the thin claiming layer of the scheduler.

The choice is made by the pure core (``judging.scheduler``); this module reads the state it needs
from the database, and claims on PostgreSQL:

- a judge's own claims are serialised by locking the judge's user row, so one judge clicking
  "Next debate" twice at once cannot take two debates on one story;
- judges claim slots (``StudySlot``, one per verdict a debate needs) with
  ``select_for_update(skip_locked=True)``, then a conditional UPDATE, so concurrent claims never
  hand the same slot twice and never wait on each other;
- a slot is held under a lease (``Study.lease_seconds`` or ``ARENA_JUDGE_LEASE_SECONDS``); an
  expired one is free again, and the judge who let it expire loses the assignment if they had
  not given a verdict.

Hand assignment goes through :func:`assign_by_hand`, which applies the same exposure rules and
refuses with the rule named. :func:`exposure_flags` finds verdicts already in the record that
break a rule (for analysis, exports and the quality page).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from arena.models import Debate, Question, Tournament
from arena.roles import JUDGE
from arena.services import assign_judge
from judging import scheduler
from judging.models import Assignment, StoryExposure, Study, StudyDebate, StudySlot, Verdict
from judging.scheduler import Candidate, ExposureRules, JudgeState

EXPERT_PROTOCOLS = frozenset({"expert"})
INACTIVE = (Debate.Status.FAILED, Debate.Status.CANCELLED)


HUMAN_KEYS = {"fraction", "verdicts", "mode", "distinct_story", "per_judge_cap", "leaderboard", "lease_seconds"}
# A lease shorter than a minute expires while a judge reads; longer than a week holds a slot from the pool.
MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 60, 7 * 24 * 3600


class ExposureError(ValueError):
    """An assignment would break an exposure rule; ``rules`` names them, the message explains."""

    def __init__(self, rules: list[str]) -> None:
        self.rules = rules
        super().__init__("; ".join(f"{rule}: {scheduler.RULE_TEXT[rule]}" for rule in rules))


class StudyError(ValueError):
    """A study cannot be created or changed as asked; the message says why."""


def _story_key(source_hash: str, title: str) -> str:
    return source_hash or f"title:{title.strip()}"


def _question_key(fingerprint: str, question_id: int) -> str:
    return fingerprint or f"id:{question_id}"


def story_of(question: Question) -> str:
    """A story's identity across question sets and tokenisations (``arena.identity.story_hash``)."""
    return _story_key(question.source_hash, question.source_title)


def question_of(question: Question) -> str:
    """A question's identity across question sets and answer orders (``Question.fingerprint``)."""
    return _question_key(question.fingerprint, question.pk)


def cell_of(debate: Debate) -> scheduler.Cell:
    """(protocol, debater pairing, correct side): the condition a study balances."""
    pairing = f"{debate.debater_a.name}|{debate.debater_b.name}"  # type: ignore[attr-defined]
    return (debate.protocol, pairing, debate.question.correct_index)


def rules_of(study: Study) -> ExposureRules:
    return ExposureRules(
        distinct_story=study.distinct_story, per_judge_cap=study.per_judge_cap, gold_every=study.gold_every
    )


def lease_of(study: Study) -> timedelta:
    return timedelta(seconds=study.lease_seconds or settings.ARENA_JUDGE_LEASE_SECONDS)


def matching_debates(study: Study) -> QuerySet[Debate]:
    """The debates a study's filters select: live studies take any debate that is not failed or
    cancelled, offline studies only finished ones."""
    qs = Debate.objects.exclude(status__in=INACTIVE)
    if study.mode == Study.Mode.OFFLINE:
        qs = qs.filter(status=Debate.Status.FINISHED)
    if study.tournament_id:
        qs = qs.filter(tournament_id=study.tournament_id)
    if study.protocol:
        qs = qs.filter(protocol=study.protocol)
    if study.question_set_id:
        qs = qs.filter(question__question_set_id=study.question_set_id)
    return qs


def add_debates(study: Study, debates: Iterable[Debate], *, gold: bool = False, target: int | None = None) -> int:
    """Put debates in the study with one slot per verdict needed; debates already in it are kept
    as they are. Returns how many were added."""
    target = target if target is not None else study.verdicts_per_debate
    if target < 1:
        raise StudyError("a debate needs at least one verdict")
    ids = [d.pk for d in debates]
    with transaction.atomic():
        present = set(StudyDebate.objects.filter(study=study, debate_id__in=ids).values_list("debate_id", flat=True))
        new = [StudyDebate(study=study, debate_id=i, target=target, gold=gold) for i in ids if i not in present]
        StudyDebate.objects.bulk_create(new, ignore_conflicts=True)
        entries = StudyDebate.objects.filter(study=study, debate_id__in=[e.debate_id for e in new])
        StudySlot.objects.bulk_create(
            [StudySlot(entry=e, index=i) for e in entries for i in range(e.target)], ignore_conflicts=True
        )
    return len(new)


def refresh(study: Study) -> int:
    """Add the debates that match the study's filters and are not in it yet (a tournament's new
    debates, a live debate that started). Returns how many were added."""
    if not (study.tournament_id or study.protocol or study.question_set_id):
        return 0  # a study picked by hand grows only by hand
    missing = matching_debates(study).exclude(study_entries__study=study).exclude(pk__in=study.skipped or [])
    chosen, skipped = [], []
    for debate in missing.only("pk"):
        (chosen if sampled(study, debate.pk) else skipped).append(debate)
    if skipped:
        # Remembered, so the draw is made once per debate and the "not in the study" query stays small.
        Study.objects.filter(pk=study.pk).update(skipped=[*(study.skipped or []), *(d.pk for d in skipped)])
        study.skipped = [*(study.skipped or []), *(d.pk for d in skipped)]
    return add_debates(study, chosen)


def sampled(study: Study, debate_id: int) -> bool:
    """Whether ``debate_id`` is among the study's random ``sample_fraction`` of debates: a uniform
    draw from a hash of (study, debate), so it is the same every time it is asked."""
    if study.sample_fraction >= 1.0:
        return True
    digest = hashlib.blake2b(f"study:{study.pk}:debate:{debate_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < study.sample_fraction


def create_study(*, name: str, created_by: AbstractBaseUser | None = None, debates: Iterable[Debate] = (),
                 **fields: object) -> Study:
    """Create a study, take the debates its filters match and those given, and make their slots."""
    if Study.objects.filter(name=name).exists():
        raise StudyError(f"a study named {name!r} already exists")
    with transaction.atomic():
        study = Study.objects.create(name=name, created_by=created_by, **fields)
        rules_of(study)  # validates the cap and the gold frequency
        if not 0.0 < study.sample_fraction <= 1.0:
            raise StudyError("the share of debates with human verdicts must be above 0 and at most 1")
        refresh(study)
        add_debates(study, debates)
    return study


@dataclass(frozen=True)
class HumanVerdicts:
    """A tournament's request for human verdicts (its ``human:`` block), next to its AI panel."""

    fraction: float = 1.0
    verdicts: int = 1
    mode: str = Study.Mode.OFFLINE
    distinct_story: bool = True
    per_judge_cap: int | None = None
    leaderboard: bool = False
    lease_seconds: int | None = None  # None: ARENA_JUDGE_LEASE_SECONDS

    def to_config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "fraction": self.fraction, "verdicts": self.verdicts, "mode": str(self.mode),
            "distinct_story": self.distinct_story, "per_judge_cap": self.per_judge_cap, "leaderboard": self.leaderboard,
        }
        if self.lease_seconds is not None:  # left out when unset, so older stored definitions read the same
            config["lease_seconds"] = self.lease_seconds
        return config


def parse_human_verdicts(value: object, problems: list[str]) -> HumanVerdicts | None:
    """Read a tournament's ``human:`` block (None: no human verdicts), adding a line to ``problems``
    for every mistake, e.g. ``human: {fraction: 0.25, verdicts: 2, mode: offline}``."""
    if value is None or value is False:
        return None
    if value is True:
        return HumanVerdicts()
    if not isinstance(value, dict):
        problems.append(
            "human must be true or a mapping (fraction, verdicts, mode, distinct_story, per_judge_cap, leaderboard,"
            " lease_seconds)"
        )
        return None
    unknown = sorted(set(value) - HUMAN_KEYS)
    if unknown:
        problems.append(f"human: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(HUMAN_KEYS))}")
    fraction = value.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) <= 1.0:
        problems.append("human.fraction must be a number above 0 and at most 1 (the share of debates judged by humans)")
        fraction = 1.0
    verdicts = value.get("verdicts", 1)
    if isinstance(verdicts, bool) or not isinstance(verdicts, int) or not 1 <= verdicts <= 50:
        problems.append("human.verdicts must be an integer from 1 to 50 (human verdicts per debate)")
        verdicts = 1
    mode = value.get("mode", Study.Mode.OFFLINE)
    if mode not in Study.Mode.values:
        problems.append(f"human.mode must be one of {', '.join(Study.Mode.values)}")
        mode = Study.Mode.OFFLINE
    cap = value.get("per_judge_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        problems.append("human.per_judge_cap must be a positive integer (or left out)")
        cap = None
    lease = value.get("lease_seconds")
    if lease is not None and (
        isinstance(lease, bool) or not isinstance(lease, int) or not MIN_LEASE_SECONDS <= lease <= MAX_LEASE_SECONDS
    ):
        problems.append(
            f"human.lease_seconds must be an integer from {MIN_LEASE_SECONDS} to {MAX_LEASE_SECONDS} (how long a judge"
            " holds a debate they took; leave it out for ARENA_JUDGE_LEASE_SECONDS)"
        )
        lease = None
    flags = {}
    for key, default in (("distinct_story", True), ("leaderboard", False)):
        flag = value.get(key, default)
        if not isinstance(flag, bool):
            problems.append(f"human.{key} must be true or false")
            flag = default
        flags[key] = flag
    return HumanVerdicts(
        fraction=float(fraction), verdicts=verdicts, mode=str(mode), per_judge_cap=cap,
        distinct_story=flags["distinct_story"], leaderboard=flags["leaderboard"], lease_seconds=lease,
    )


def create_tournament_study(tournament: Tournament, human: HumanVerdicts,
                            created_by: AbstractBaseUser | None = None) -> Study:
    """The study that collects a tournament's human verdicts; it grows as the tournament's debates
    finish (offline) or start (live), taking a random ``human.fraction`` of them."""
    return create_study(
        name=f"{tournament.name} #{tournament.pk}: human verdicts", created_by=created_by,
        description=f"Human verdicts for tournament {tournament.name}, next to its AI panel.",
        tournament=tournament, mode=human.mode, verdicts_per_debate=human.verdicts, sample_fraction=human.fraction,
        distinct_story=human.distinct_story, per_judge_cap=human.per_judge_cap, leaderboard=human.leaderboard,
        lease_seconds=human.lease_seconds,
    )


def judge_state(judge: AbstractBaseUser, study: Study | None = None) -> JudgeState:
    """What the exposure rules need about ``judge``: debates held or judged, in any study."""
    held = set(Assignment.objects.filter(judge=judge).values_list("debate_id", flat=True))
    judged = set(Verdict.objects.filter(judge=judge).values_list("debate_id", flat=True))
    debates = held | judged
    rows = [
        (_question_key(fingerprint, qid), _story_key(source_hash, title), protocol)
        for qid, fingerprint, source_hash, title, protocol in Debate.objects.filter(pk__in=debates).values_list(
            "question_id", "question__fingerprint", "question__source_hash", "question__source_title", "protocol"
        )
    ]
    questions = {q for q, _, _ in rows}
    stories = {story for _, story, _ in rows}
    read = {story for _, story, protocol in rows if protocol in EXPERT_PROTOCOLS}
    read |= exposed_stories(judge.pk)
    count = 0
    if study is not None:
        count = StudyDebate.objects.filter(study=study, debate_id__in=debates).count()
    return JudgeState(
        judge_id=judge.pk, debates=frozenset(debates), questions=frozenset(questions),
        stories=frozenset(stories), read_stories=frozenset(read), study_count=count,
    )


def exposed_stories(judge_id: int) -> set[str]:
    """Stories a researcher recorded this judge as having read (``StoryExposure``, by title): the
    story keys of every question with that title, and the title itself."""
    titles = {t.strip() for t in StoryExposure.objects.filter(judge_id=judge_id).values_list("story", flat=True)}
    if not titles:
        return set()
    keys = {_story_key("", t) for t in titles}
    rows = Question.objects.filter(source_title__in=titles).values_list("source_hash", "source_title")
    for source_hash, title in rows:
        keys.add(_story_key(source_hash, title))
    return keys


@dataclass(frozen=True)
class RecordedExposure:
    """A story exposure just recorded, with the judge's verdicts on that story it now flags."""

    exposure: StoryExposure
    flagged_verdicts: int


def record_exposure(judge: AbstractBaseUser, story: str, role: str) -> RecordedExposure:
    """Record that ``judge`` read ``story`` (a title, as in ``Question.source_title``) as a
    debater or an expert, so the scheduler and hand assignment never give them a debate on it.

    The title must be one the arena's questions use (matched without regard to case, stored as the
    questions spell it): a misspelt title would silently protect nothing. A second record of the
    same story and role is refused. Verdicts the judge already gave on the story are not removed;
    :func:`exposure_flags` flags them (read-story), and their number is returned for the message.
    """
    title = " ".join(story.split())
    if not title:
        raise StudyError("give the story's title")
    if role not in StoryExposure.Role.values:
        raise StudyError(f"the role must be one of {', '.join(StoryExposure.Role.values)}")
    known = (
        Question.objects.filter(source_title__iexact=title).order_by("pk").values_list("source_title", flat=True).first()
    )
    if known is None:
        raise StudyError(
            f"no question in the arena comes from a story titled {title!r}; "
            "use the title as the question sets spell it (Question.source_title)"
        )
    with transaction.atomic():
        if StoryExposure.objects.filter(judge=judge, story=known, role=role).exists():
            raise StudyError(f"{judge.get_username()} is already recorded as having read {known!r} as {role}")
        exposure = StoryExposure.objects.create(judge=judge, story=known, role=role)
    stories = exposed_stories(judge.pk)
    flagged = sum(
        1
        for source_hash, source_title in Verdict.objects.filter(judge=judge, kind=Verdict.Kind.HUMAN)
        .exclude(debate__protocol__in=EXPERT_PROTOCOLS)
        .values_list("debate__question__source_hash", "debate__question__source_title")
        if source_title.strip() == known.strip() and _story_key(source_hash, source_title) in stories
    )
    return RecordedExposure(exposure, flagged)


def forget_exposure(judge: AbstractBaseUser, exposure_id: int) -> StoryExposure:
    """Remove a story exposure recorded by mistake; StudyError when ``judge`` has no such record."""
    exposure = StoryExposure.objects.filter(judge=judge, pk=exposure_id).first()
    if exposure is None:
        raise StudyError("that story record does not exist (it may have been removed already)")
    exposure.delete()
    return exposure


def _free(now: datetime) -> Q:
    return Q(verdict__isnull=True) & (Q(judge__isnull=True) | Q(lease_expires__lt=now))


def _busy(now: datetime) -> Q:
    return Q(slots__verdict__isnull=False) | Q(slots__judge__isnull=False, slots__lease_expires__gte=now)


def candidates(study: Study, now: datetime | None = None) -> list[Candidate]:
    """The study's debates as the scheduler sees them (failed and cancelled ones left out)."""
    now = now or timezone.now()
    entries = (
        StudyDebate.objects.filter(study=study)
        .exclude(debate__status__in=INACTIVE)
        .select_related("debate__question", "debate__debater_a", "debate__debater_b")
        .annotate(filled=Count("slots", filter=_busy(now)))
    )
    return [
        Candidate(
            debate_id=e.debate_id, question=question_of(e.debate.question), story=story_of(e.debate.question),
            cell=cell_of(e.debate), target=e.target, filled=e.filled, gold=e.gold,  # type: ignore[attr-defined]
        )
        for e in entries
    ]


def link_verdict(verdict: Verdict, *, new: bool = False) -> StudySlot | None:
    """Fill the study slot the verdict's judge holds on its debate with ``verdict``, at once.

    Called by ``judging.services.submit_human_verdict`` in the transaction that saves the verdict,
    so a study's progress and the scheduler count it from the moment it exists. The slot may be
    held under an expired lease: a verdict given after expiry but before another judge took the
    slot still counts. The conditional UPDATE (still this judge's, still empty) makes a claim
    racing for the expired slot either win before (nothing is linked: the slot is someone else's)
    or wait on the row lock and find it filled. A debate in several studies fills the slot of the
    oldest study the judge holds one in (a verdict fills one slot). ``new``: the verdict was saved
    in this very transaction, so no slot can hold it yet (one query fewer).
    """
    if verdict.judge_id is None:
        return None
    if not new and StudySlot.objects.filter(verdict=verdict).exists():
        return None
    held = (
        StudySlot.objects.filter(entry__debate_id=verdict.debate_id, judge_id=verdict.judge_id, verdict__isnull=True)
        .order_by("entry__study__created_at", "entry__study_id", "index")
        .values_list("pk", flat=True)
    )
    for slot_id in held:
        if StudySlot.objects.filter(pk=slot_id, judge_id=verdict.judge_id, verdict__isnull=True).update(
            verdict=verdict
        ):
            return StudySlot.objects.get(pk=slot_id)
    return None


def settle(study: Study) -> int:
    """Repair: link verdicts that did not go through :func:`link_verdict` to the slots their
    judges held (verdicts added in the Django admin, or given before verdicts were linked when
    saved). Returns how many were linked.

    One query finds the held slots whose judge has a verdict on the slot's debate; only those are
    updated (usually none), so a claim or the study page does not pay per slot held.
    """
    found = (
        StudySlot.objects.filter(entry__study=study, verdict__isnull=True, judge__isnull=False)
        .filter(entry__debate__verdicts__judge_id=F("judge_id"))
        .values_list("pk", "entry__debate__verdicts__pk")
    )
    linked = 0
    for slot_id, verdict_id in found:
        if not StudySlot.objects.filter(verdict_id=verdict_id).exists():
            linked += StudySlot.objects.filter(pk=slot_id, verdict__isnull=True).update(verdict_id=verdict_id)
    return linked


@dataclass(frozen=True)
class Claim:
    """The result of "Next debate": the assignment, or None with the reason for the judge."""

    assignment: Assignment | None
    reason: str = ""
    resumed: bool = False


def visible_studies(judge: AbstractBaseUser) -> QuerySet[Study]:
    """The open studies ``judge`` may see, take debates from and see the leaderboard of: those open
    to all judges and those the judge is a member of. Hand assignment does not look at membership."""
    return Study.objects.filter(Q(open_to_all=True) | Q(members=judge), active=True).distinct()


def may_join(study: Study, judge: AbstractBaseUser) -> bool:
    """Whether ``judge`` may take debates from ``study`` (see :func:`visible_studies`)."""
    return study.open_to_all or study.members.filter(pk=judge.pk).exists()


def set_member(study: Study, username: str, member: bool) -> AbstractBaseUser:
    """Add the judge named ``username`` to ``study``'s members (or remove them); raises
    :class:`StudyError` when no active judge has that name."""
    judge = get_user_model().objects.filter(username=username.strip(), groups__name=JUDGE, is_active=True).first()
    if judge is None:
        raise StudyError(f"no active judge named {username.strip()!r}")
    if member:
        study.members.add(judge)
    else:
        study.members.remove(judge)
    return judge


def held_slot(study: Study, judge: AbstractBaseUser, now: datetime | None = None) -> StudySlot | None:
    """The slot ``judge`` holds in ``study`` under a live lease and has not judged yet."""
    now = now or timezone.now()
    return (
        StudySlot.objects.filter(entry__study=study, judge=judge, verdict__isnull=True, lease_expires__gte=now)
        .select_related("entry")
        .first()
    )


def next_debate(study: Study, judge: AbstractBaseUser, now: datetime | None = None) -> Claim:
    """Give ``judge`` the study debate they should judge now, under a lease.

    A judge holds one debate of a study at a time: asking again while it is unjudged returns the
    same one. Otherwise the pure core ranks the eligible debates and the first with a free slot
    is claimed (``skip_locked``: a slot another judge is claiming right now is passed over).
    """
    if not study.active:
        return Claim(None, "this study is closed")
    if not may_join(study, judge):
        return Claim(None, "this study is open to its members only")
    refresh(study)
    now = now or timezone.now()
    with transaction.atomic():
        # Serialises this judge's own claims: the rules read their history, then extend it.
        get_user_model().objects.select_for_update().filter(pk=judge.pk).first()
        settle(study)
        slot = held_slot(study, judge, now)
        if slot is not None:
            assignment = Assignment.objects.filter(debate_id=slot.entry.debate_id, judge=judge).first()
            if assignment is not None:
                return Claim(assignment, resumed=True)
        state = judge_state(judge, study)
        ranked = scheduler.rank(candidates(study, now), state, rules_of(study))
        for candidate in ranked:
            claimed = _claim_slot(study, candidate.debate_id, judge, now)
            if claimed is not None:
                return Claim(claimed)
    if not ranked:
        return Claim(None, "nothing in this study is waiting for you: every debate you may judge has its verdicts")
    return Claim(None, "other judges took the last free debates a moment ago; try again shortly")


def _claim_slot(study: Study, debate_id: int, judge: AbstractBaseUser, now: datetime) -> Assignment | None:
    entry_id = StudyDebate.objects.filter(study=study, debate_id=debate_id).values_list("pk", flat=True).first()
    # of=("self",): lock the slot row only. Locking the joined entry too would make every other
    # slot of the debate look taken to concurrent claims (SKIP LOCKED skips on any locked row).
    slot = (
        StudySlot.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(_free(now), entry_id=entry_id)
        .order_by("index")
        .first()
    )
    if slot is None:
        return None
    previous = slot.judge_id
    updated = StudySlot.objects.filter(_free(now), pk=slot.pk).update(
        judge=judge, leased_at=now, lease_expires=now + lease_of(study), handed_out=slot.handed_out + 1
    )
    if updated != 1:
        return None
    if previous is not None and previous != judge.pk:
        _drop_unjudged(debate_id, previous)
    debate = Debate.objects.get(pk=debate_id)
    return assign_judge(debate, judge)


def _drop_unjudged(debate_id: int, judge_id: int) -> None:
    """The lease of ``judge_id`` expired: without a verdict, the debate leaves their queue."""
    if not Verdict.objects.filter(debate_id=debate_id, judge_id=judge_id).exists():
        Assignment.objects.filter(debate_id=debate_id, judge_id=judge_id).delete()


def release_expired(now: datetime | None = None) -> int:
    """Return every expired, unjudged lease to its pool (the claim does this lazily as well).

    Returns how many slots were freed.
    """
    now = now or timezone.now()
    freed = 0
    expired = StudySlot.objects.filter(verdict__isnull=True, judge__isnull=False, lease_expires__lt=now)
    for slot in expired.select_related("entry"):
        with transaction.atomic():
            verdict = Verdict.objects.filter(debate_id=slot.entry.debate_id, judge_id=slot.judge_id).first()
            if verdict is not None and not StudySlot.objects.filter(verdict=verdict).exists():
                StudySlot.objects.filter(pk=slot.pk, verdict__isnull=True).update(verdict=verdict)
                continue
            judge_id = slot.judge_id
            still_expired = StudySlot.objects.filter(
                pk=slot.pk, judge_id=judge_id, lease_expires__lt=now, verdict__isnull=True
            )
            if still_expired.update(judge=None, leased_at=None, lease_expires=None):
                freed += 1
                if judge_id is not None and verdict is None:
                    _drop_unjudged(slot.entry.debate_id, judge_id)
    return freed


def rules_for_debate(debate: Debate) -> tuple[ExposureRules, Study | None]:
    """The rules that govern assigning ``debate``: its (first) study's, else the defaults."""
    study = Study.objects.filter(entries__debate=debate).order_by("created_at").first()
    return (rules_of(study) if study else ExposureRules()), study


def check_assignment(debate: Debate, judge: AbstractBaseUser) -> list[str]:
    """The exposure rules that giving ``debate`` to ``judge`` would break (empty: allowed)."""
    rules, study = rules_for_debate(debate)
    candidate = Candidate(
        debate_id=debate.pk, question=question_of(debate.question), story=story_of(debate.question),
        cell=("", "", 0), target=1, filled=0,
    )
    return scheduler.violations(candidate, judge_state(judge, study), rules)


def check_new_debate(question: Question, judges: Iterable[AbstractBaseUser]) -> dict[str, list[str]]:
    """For a debate about to be created on ``question``: the rules each judge would break, by
    username (judges who break none are left out). Default rules apply (no study yet)."""
    broken: dict[str, list[str]] = {}
    candidate = Candidate(
        debate_id=0, question=question_of(question), story=story_of(question), cell=("", "", 0), target=1, filled=0
    )
    for judge in judges:
        rules = scheduler.violations(candidate, judge_state(judge), ExposureRules())
        if rules:
            broken[judge.get_username()] = rules
    return broken


def assign_by_hand(debate: Debate, judge: AbstractBaseUser) -> Assignment:
    """A researcher gives ``debate`` to ``judge``; refused with the rule named if it breaks one.

    In a study, the hand assignment takes a free slot when there is one, so the scheduler counts it.
    """
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=judge.pk).first()
        broken = check_assignment(debate, judge)
        if broken:
            raise ExposureError(broken)
        assignment = assign_judge(debate, judge)
        entry = StudyDebate.objects.filter(debate=debate).select_related("study").order_by("study__created_at").first()
        if entry is not None:
            now = timezone.now()
            free = StudySlot.objects.select_for_update(skip_locked=True, of=("self",)).filter(_free(now), entry=entry)
            slot = free.first()
            if slot is not None:
                StudySlot.objects.filter(pk=slot.pk).update(
                    judge=judge, leased_at=now, lease_expires=now + lease_of(entry.study),
                    handed_out=slot.handed_out + 1,
                )
    return assignment


def exposure_flags(verdicts: QuerySet[Verdict] | None = None) -> dict[int, list[str]]:
    """Human verdicts in the record that break an exposure rule: verdict id -> rules broken.

    A judge's verdicts are taken in the order given; a verdict on a question or a story the
    judge had judged before is flagged (same-question, same-story), as is one on a story they
    read as a debater or expert (read-story). Imported verdicts without a user are not checked.
    """
    qs = verdicts if verdicts is not None else Verdict.objects.all()
    rows = (
        qs.filter(kind=Verdict.Kind.HUMAN, judge__isnull=False)
        .order_by("judge_id", "created_at", "pk")
        .values_list(
            "pk", "judge_id", "debate__question_id", "debate__question__fingerprint",
            "debate__question__source_hash", "debate__question__source_title", "debate__protocol",
        )
    )
    read: dict[int, set[str]] = {}
    for judge_id in set(StoryExposure.objects.values_list("judge_id", flat=True)):
        read[judge_id] = exposed_stories(judge_id)
    for judge_id, source_hash, title in Assignment.objects.filter(debate__protocol__in=EXPERT_PROTOCOLS).values_list(
        "judge_id", "debate__question__source_hash", "debate__question__source_title"
    ):
        read.setdefault(judge_id, set()).add(_story_key(source_hash, title))
    flags: dict[int, list[str]] = {}
    seen_questions: dict[int, set[str]] = {}
    seen_stories: dict[int, set[str]] = {}
    for pk, judge_id, qid, fingerprint, source_hash, title, protocol in rows:
        story = _story_key(source_hash, title)
        question_id = _question_key(fingerprint, qid)
        questions = seen_questions.setdefault(judge_id, set())
        stories = seen_stories.setdefault(judge_id, set())
        broken = []
        if question_id in questions:
            broken.append(scheduler.SAME_QUESTION)
        elif story in stories:
            broken.append(scheduler.SAME_STORY)
        # An expert judge reads the story in the very debate they judge: only later ones are flagged.
        if story in read.get(judge_id, set()) and protocol not in EXPERT_PROTOCOLS:
            broken.append(scheduler.READ_STORY)
        if broken:
            flags[pk] = broken
        questions.add(question_id)
        stories.add(story)
    return flags


@dataclass(frozen=True)
class StudyProgress:
    debates: int
    verdicts_needed: int
    verdicts_given: int
    leased: int
    cells: dict[str, tuple[int, int]]


def progress(study: Study, now: datetime | None = None) -> StudyProgress:
    """Verdicts given and needed, overall and per cell (for the study page)."""
    now = now or timezone.now()
    settle(study)
    cells: dict[str, tuple[int, int]] = {}
    given = needed = leased = 0
    entries = (
        StudyDebate.objects.filter(study=study)
        .exclude(debate__status__in=INACTIVE)
        .select_related("debate__question", "debate__debater_a", "debate__debater_b")
        .annotate(
            given=Count("slots", filter=Q(slots__verdict__isnull=False)),
            leased=Count(
                "slots",
                filter=Q(slots__verdict__isnull=True, slots__judge__isnull=False, slots__lease_expires__gte=now),
            ),
        )
    )
    count = 0
    for e in entries:
        count += 1
        g: int = e.given  # type: ignore[attr-defined]
        given += g
        needed += e.target
        leased += e.leased  # type: ignore[attr-defined]
        protocol, pairing, side = cell_of(e.debate)
        key = f"{protocol} · {pairing} · correct answer {side + 1}"
        have, want = cells.get(key, (0, 0))
        cells[key] = (have + g, want + e.target)
    return StudyProgress(count, needed, given, leased, dict(sorted(cells.items())))
