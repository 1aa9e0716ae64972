"""Studies and the claiming layer of the scheduler, on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from arena import services
from arena.engine.protocol import Limits
from arena.models import Debate, Question, QuestionSet
from debaters.models import DebaterProfile
from judging import studies
from judging.models import Assignment, StoryExposure, Study, StudySlot, Verdict
from judging.services import submit_human_verdict


def _questions(count: int, *, stories: int | None = None, start: int = 0) -> list[Question]:
    qset, _ = QuestionSet.objects.get_or_create(name="study-set")
    stories = stories or start + count
    return [
        Question.objects.create(
            question_set=qset, external_id=f"q{i}", question=f"Question {i}?", answers=["yes", "no"],
            correct_index=i % 2, source_title=f"Story {i % stories}", source_text=f"Text of story {i % stories}.",
        )
        for i in range(start, start + count)
    ]


def _debates(questions: list[Question], profile, *, finished: bool = True, protocol: str = "debate") -> list[Debate]:  # type: ignore[no-untyped-def]
    made = []
    for q in questions:
        debate = services.create_debate(
            question=q, debater_a=profile, debater_b=profile, protocol=protocol,
            limits=Limits(rounds=1, max_tokens=24, word_limit=60), enqueue=False, seed=1,
        )
        if finished:
            Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED)
        made.append(debate)
    return made


def _verdict(assignment: Assignment) -> Verdict:
    return Verdict.objects.create(
        debate=assignment.debate, judge=assignment.judge, shown_first=assignment.shown_first,
        p_a=0.8, p_b=0.2, reason="a reason", correct=assignment.debate.question.correct_index == 0,
    )


@pytest.mark.django_db
def test_it_hands_a_judge_the_study_debate_furthest_from_its_target(alice, bob, charlie, profile) -> None:  # type: ignore[no-untyped-def]
    debates = _debates(_questions(3), profile)
    study = studies.create_study(name="s", created_by=alice, debates=debates, verdicts_per_debate=2)
    first = studies.next_debate(study, bob).assignment
    assert first is not None
    # Charlie is not sent to the debate bob holds: the others still miss two verdicts each.
    second = studies.next_debate(study, charlie).assignment
    assert second is not None and second.debate_id != first.debate_id
    assert StudySlot.objects.filter(judge__isnull=False).count() == 2


@pytest.mark.django_db
def test_it_gives_back_the_debate_a_judge_holds_until_they_judge_it(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(3), profile))
    first = studies.next_debate(study, bob)
    again = studies.next_debate(study, bob)
    assert again.resumed and again.assignment == first.assignment
    _verdict(first.assignment)  # type: ignore[arg-type]
    after = studies.next_debate(study, bob).assignment
    assert after is not None and after.debate_id != first.assignment.debate_id  # type: ignore[union-attr]
    assert StudySlot.objects.filter(verdict__isnull=False).count() == 1


@pytest.mark.django_db
def test_it_never_gives_a_judge_a_second_debate_on_a_story(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    # Four questions over two stories: bob may judge two debates, one per story.
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(4, stories=2), profile))
    stories = []
    while (claim := studies.next_debate(study, bob)).assignment is not None:
        stories.append(claim.assignment.debate.question.source_title)
        _verdict(claim.assignment)
    assert sorted(stories) == ["Story 0", "Story 1"]
    assert "nothing in this study is waiting for you" in claim.reason


@pytest.mark.django_db
def test_it_keeps_a_story_from_a_judge_who_read_it_as_a_debater(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(2), profile))
    StoryExposure.objects.create(judge=bob, story="Story 0", role=StoryExposure.Role.DEBATER)
    claim = studies.next_debate(study, bob)
    assert claim.assignment is not None and claim.assignment.debate.question.source_title == "Story 1"


@pytest.mark.django_db
def test_it_stops_at_the_per_judge_cap(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(4), profile), per_judge_cap=2)
    for _ in range(2):
        _verdict(studies.next_debate(study, bob).assignment)  # type: ignore[arg-type]
    assert studies.next_debate(study, bob).assignment is None


@pytest.mark.django_db
def test_it_returns_an_abandoned_lease_to_the_pool(alice, bob, charlie, profile) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(
        name="s", created_by=alice, debates=_debates(_questions(1), profile), lease_seconds=60
    )
    held = studies.next_debate(study, bob).assignment
    assert held is not None
    assert studies.next_debate(study, charlie).assignment is None  # the only slot is leased
    later = timezone.now() + timedelta(seconds=61)
    taken = studies.next_debate(study, charlie, now=later).assignment
    assert taken is not None and taken.debate_id == held.debate_id
    # Bob never gave a verdict: the debate left his queue.
    assert not Assignment.objects.filter(judge=bob).exists()
    assert StudySlot.objects.get().handed_out == 2


@pytest.mark.django_db
def test_release_expired_frees_leases_and_keeps_verdicts(alice, bob, charlie, profile) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(2), profile), lease_seconds=60)
    judged = studies.next_debate(study, bob).assignment
    _verdict(judged)  # type: ignore[arg-type]
    studies.next_debate(study, charlie)
    assert studies.release_expired(timezone.now() + timedelta(seconds=120)) == 1
    assert StudySlot.objects.filter(verdict__isnull=False).count() == 1
    assert Assignment.objects.filter(judge=bob).exists()
    assert not Assignment.objects.filter(judge=charlie).exists()


@pytest.mark.django_db
def test_it_leaves_cancelled_debates_out_of_the_pool(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    debates = _debates(_questions(2), profile)
    study = studies.create_study(name="s", created_by=alice, debates=debates)
    Debate.objects.filter(pk=debates[0].pk).update(status=Debate.Status.CANCELLED)
    Debate.objects.filter(pk=debates[1].pk).update(status=Debate.Status.FAILED)
    assert studies.next_debate(study, bob).assignment is None


@pytest.mark.django_db
def test_a_study_by_filter_takes_only_finished_debates_offline_and_grows(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    qs = _questions(3)
    _debates(qs[:1], profile, protocol="consultancy")
    _debates(qs[1:2], profile, finished=False)
    finished = _debates(qs[2:], profile)
    study = studies.create_study(name="s", created_by=alice, protocol="debate", mode=Study.Mode.OFFLINE)
    assert list(study.entries.values_list("debate_id", flat=True)) == [finished[0].pk]
    Debate.objects.filter(question=qs[1]).update(status=Debate.Status.FINISHED)
    assert studies.refresh(study) == 1


@pytest.mark.django_db
def test_hand_assignment_against_a_rule_is_refused_with_the_rule_named(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    first, second = _debates(_questions(2, stories=1), profile)
    _verdict(studies.assign_by_hand(first, bob))
    with pytest.raises(studies.ExposureError) as error:
        studies.assign_by_hand(second, bob)
    assert error.value.rules == ["same-story"]
    assert "never judges the same story twice" in str(error.value)
    assert not Assignment.objects.filter(debate=second).exists()


@pytest.mark.django_db
def test_hand_assignment_follows_the_study_rules_and_takes_a_slot(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    first, second = _debates(_questions(2, stories=1), profile)
    study = studies.create_study(name="s", created_by=alice, debates=[first, second], distinct_story=False)
    _verdict(studies.assign_by_hand(first, bob))
    studies.assign_by_hand(second, bob)  # the study allows a second question on one story
    assert StudySlot.objects.filter(entry__study=study, judge=bob).count() == 2


@pytest.mark.django_db
def test_exposure_flags_mark_verdicts_that_broke_a_rule(bob, profile) -> None:  # type: ignore[no-untyped-def]
    a, b, c = _debates(_questions(3, stories=2), profile)  # a and c share Story 0
    verdicts = [_verdict(services.assign_judge(d, bob)) for d in (a, b, c)]
    assert studies.exposure_flags() == {verdicts[2].pk: ["same-story"]}


@pytest.mark.django_db(transaction=True)
def test_fifty_judges_clicking_next_at_once_never_share_a_slot(roles, profile) -> None:  # type: ignore[no-untyped-def]
    """50 judges, each on its own thread and database connection, ask at the same moment for a
    debate of a study with 40 slots (20 debates × 2 verdicts): 40 get one, each slot exactly once."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    assert connection.vendor == "postgresql"
    judge_group = Group.objects.get(name="judge")
    judges = []
    for i in range(50):
        user = get_user_model().objects.create_user(username=f"judge{i}", password="x")
        user.groups.add(judge_group)
        judges.append(user)
    study = studies.create_study(name="crowd", debates=_debates(_questions(20), profile), verdicts_per_debate=2)
    barrier = threading.Barrier(50)
    results: dict[int, int | None] = {}
    errors: list[BaseException] = []

    def click(judge) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait(30)
            claim = studies.next_debate(study, judge)
            results[judge.pk] = claim.assignment.debate_id if claim.assignment else None
        except BaseException as exc:  # noqa: BLE001 - reported below with the thread's failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(j,)) for j in judges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    handed = [d for d in results.values() if d is not None]
    assert len(results) == 50
    assert len(handed) == 40
    slots = StudySlot.objects.filter(entry__study=study)
    assert all(s.handed_out == 1 and s.judge_id is not None for s in slots)
    assert len({s.judge_id for s in slots}) == 40
    # Each debate went to exactly its two judges, and each judge's assignment matches its slot.
    for debate_id in set(handed):
        assert handed.count(debate_id) == 2
    assert Assignment.objects.count() == 40


@pytest.mark.django_db
def test_exports_leave_out_flagged_verdicts_and_excluded_judges_by_default(bob, charlie, profile) -> None:  # type: ignore[no-untyped-def]
    from judging import invitations
    from judging.exports.request import ExportRequest
    from judging.exports.sources import verdict_queryset

    a, b = _debates(_questions(2, stories=1), profile)
    first, second = (_verdict(services.assign_judge(d, bob)) for d in (a, b))
    other = _verdict(services.assign_judge(a, charlie))
    assert set(verdict_queryset(req=ExportRequest(judge="human"))) == {first, other}
    assert set(verdict_queryset(req=ExportRequest(judge="human", include_flagged=True))) == {first, second, other}
    invitations.set_excluded(charlie, True)
    assert set(verdict_queryset(req=ExportRequest(judge="human"))) == {first}


@pytest.mark.django_db
def test_a_gold_check_is_mixed_into_a_judges_stream_when_due(alice, bob, profile) -> None:  # type: ignore[no-untyped-def]
    from django.test import Client

    regular = _debates(_questions(3), profile)
    gold = _debates(_questions(1, start=3), profile)[0]
    study = studies.create_study(name="s", created_by=alice, debates=regular, gold_every=2)
    client = Client()
    client.force_login(alice)
    page = client.post(f"/studies/{study.pk}/", {"action": "add", "debate_ids": str(gold.pk), "gold": "on"})
    assert "1 debates added as gold checks" in page.content.decode()
    first = studies.next_debate(study, bob).assignment
    assert first is not None and first.debate_id != gold.pk
    _verdict(first)
    second = studies.next_debate(study, bob).assignment
    assert second is not None and second.debate_id == gold.pk


@pytest.mark.django_db
def test_a_study_can_take_a_random_share_of_its_matching_debates(alice, profile) -> None:  # type: ignore[no-untyped-def]
    debates = _debates(_questions(40), profile)
    study = studies.create_study(name="half", created_by=alice, protocol="debate", sample_fraction=0.5)
    taken = set(study.entries.values_list("debate_id", flat=True))
    assert 10 <= len(taken) <= 30
    study.refresh_from_db()
    assert len(taken) + len(study.skipped) == 40
    assert studies.refresh(study) == 0, "the draw is made once per debate"
    assert taken == {d.pk for d in debates if studies.sampled(study, d.pk)}
    with pytest.raises(studies.StudyError, match="above 0"):
        studies.create_study(name="none", created_by=alice, protocol="debate", sample_fraction=0.0)


# --- a verdict fills its slot when it is saved ---------------------------------------------------


@pytest.mark.django_db
def test_it_fills_the_slot_the_moment_the_judge_submits_a_verdict(
    alice: User, bob: User, profile: DebaterProfile
) -> None:
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(2), profile))
    held = studies.next_debate(study, bob).assignment
    assert held is not None
    client = Client()
    client.force_login(bob)
    response = client.post(
        f"/judge/debates/{held.debate_id}/", {"p_first": "0.7", "p_second": "0.3", "reason": "The quotes decided it."}
    )
    assert response.status_code == 302, response.content.decode()[-500:]
    # No claim, page or sweep in between: the row itself says filled.
    slot = StudySlot.objects.get(entry__debate_id=held.debate_id)
    verdict = Verdict.objects.get(debate_id=held.debate_id, judge=bob)
    assert slot.verdict_id == verdict.pk and slot.judge_id == bob.pk
    assert StudySlot.objects.filter(entry__study=study, verdict__isnull=False).count() == 1
    assert studies.progress(study).verdicts_given == 1
    # The scheduler counts it too: the judged debate has reached its target.
    filled = {c.debate_id: c.filled for c in studies.candidates(study)}
    assert filled[held.debate_id] == 1


@pytest.mark.django_db
def test_a_verdict_after_the_lease_expired_still_fills_the_slot_nobody_took(
    alice: User, bob: User, profile: DebaterProfile
) -> None:
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(1), profile), lease_seconds=1)
    held = studies.next_debate(study, bob).assignment
    assert held is not None
    StudySlot.objects.update(lease_expires=timezone.now() - timedelta(seconds=5))
    verdict = submit_human_verdict(held, 0.8, 0.2, "Late, but the slot was still mine.")
    assert StudySlot.objects.get().verdict_id == verdict.pk


@pytest.mark.django_db
def test_a_verdict_fills_no_slot_another_judge_took_after_the_lease_expired(
    alice: User, bob: User, charlie: User, profile: DebaterProfile
) -> None:
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(1), profile), lease_seconds=60)
    held = studies.next_debate(study, bob).assignment
    assert held is not None
    taken = studies.next_debate(study, charlie, now=timezone.now() + timedelta(seconds=61)).assignment
    assert taken is not None and taken.debate_id == held.debate_id
    verdict = submit_human_verdict(taken, 0.8, 0.2, "Charlie holds the slot now.")
    slot = StudySlot.objects.get()
    assert slot.judge_id == charlie.pk and slot.verdict_id == verdict.pk


@pytest.mark.django_db
def test_settle_still_repairs_a_verdict_saved_outside_the_service(
    alice: User, bob: User, profile: DebaterProfile
) -> None:
    study = studies.create_study(name="s", created_by=alice, debates=_debates(_questions(1), profile))
    held = studies.next_debate(study, bob).assignment
    assert held is not None
    verdict = _verdict(held)  # as the Django admin would add it
    assert StudySlot.objects.get().verdict_id is None
    assert studies.settle(study) == 1
    assert StudySlot.objects.get().verdict_id == verdict.pk
