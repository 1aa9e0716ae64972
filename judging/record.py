"""The record checks itself: every invariant the analysis and the exports rely on.

``check_record()`` reads questions, debates, turns and verdicts and returns one
:class:`Violation` per broken invariant (``manage.py check_record`` prints them and exits 1; the
test suite runs it after its end-to-end, tournament and import tests):

* **questions**: two different answers, a gold index of 0 or 1, and ``source_hash`` /
  ``fingerprint`` that match the content (an ``update()`` that bypassed ``save`` leaves them stale);
* **what debates saw**: each debate's ``question_hash`` equals its question's content hash now, so
  the question's answers (in their order), gold, and text are the ones the turns and verdicts
  refer to;
* **turns**: indices 0…n−1 without a gap (a debate cancelled or failed inside a round may lack
  speeches of that round only: a simultaneous round's speeches are committed as each ends); each turn's round and side are the protocol's slot at
  that index, scheduled with the debate's ``first_side`` (0 or 1: the answer whose debater speaks
  first in every round), so a speech out of the drawn speaking order is a violation (imported NYU
  rooms excepted, whose schedule is the room's own: sides 0/1, and a consultancy's only speaker on
  the consultant's side); ``first_side`` is 0 or 1; a finished debate has every slot;
* **quote checks**: one per ``<quote>`` element of the turn's text, at its offsets; a verified
  quote's ``source_span`` holds the quote in the question's current source, and an unverified
  one is not in it;
* **verdicts**: the probabilities sum to 1; ``correct`` is what they say about the gold answer
  (``None`` for 50/50); ``shown_first`` is the judge's recorded order (its assignment, or the
  debate's ``shown_first`` for AI judges and imported verdicts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from arena import identity
from arena.engine.protocol import ProtocolError, make_protocol
from arena.models import Debate, Question, Turn
from debaters.quotes import QuoteCheck, SourceIndex, extract_quotes, normalize
from judging.models import Assignment, Verdict, verdict_correct

SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Violation:
    """One broken invariant: what it concerns (``"debate 12"``) and what is wrong."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


def check_questions(questions: Iterable[Question]) -> list[Violation]:
    out: list[Violation] = []
    for q in questions:
        subject = f"question {q.pk} ({q.external_id})"
        answers = q.answers
        if not (isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) for a in answers)):
            out.append(Violation(subject, f"answers must be two strings, not {answers!r}"))
            continue
        if answers[0] == answers[1]:
            out.append(Violation(subject, "its two answers are the same"))
        if q.correct_index not in (0, 1):
            out.append(Violation(subject, f"gold index {q.correct_index} is not 0 or 1"))
        source_hash = identity.story_hash(q.source_text)
        fingerprint = identity.question_fingerprint(source_hash, q.question, answers)
        if q.source_hash != source_hash or q.fingerprint != fingerprint:
            out.append(Violation(subject, "source_hash/fingerprint do not match its content (changed without save())"))
    return out


def _quote_problems(turn: Turn, index: SourceIndex) -> list[str]:
    problems: list[str] = []
    elements = extract_quotes(turn.text)
    if len(elements) != len(turn.quotes or []):
        return [f"has {len(elements)} quote element(s) but {len(turn.quotes or [])} quote check(s)"]
    for n, ((start, end, text), raw) in enumerate(zip(elements, turn.quotes, strict=True)):
        try:
            check = QuoteCheck.from_dict(raw)
        except ValueError as exc:
            problems.append(f"quote check {n} is malformed ({exc})")
            continue
        if (check.start, check.end, check.text) != (start, end, text):
            problems.append(f"quote check {n} is not at the quote's place in the text")
            continue
        needle = normalize(text)
        found = bool(needle) and f" {needle} " in f" {index.normalized} "
        if check.verified:
            span = check.source_span
            if span is None or not 0 <= span[0] < span[1] <= len(index.source):
                problems.append(f"verified quote {n} has no valid source span")
            elif normalize(index.source[span[0] : span[1]]) != needle:
                problems.append(f"verified quote {n} is not at its source span in the question's story")
        elif found:
            problems.append(f"quote {n} is marked unverified but is in the question's story")
    return problems


def _turn_problems(debate: Debate, turns: list[Turn]) -> list[str]:
    problems: list[str] = []
    indices = [t.index for t in turns]
    # A debate stopped mid-way (cancelled, failed) may hold part of a step whose speeches are
    # written at once (a simultaneous round): checked against the protocol's rounds below.
    stopped = debate.status in (Debate.Status.CANCELLED, Debate.Status.FAILED)
    gapped = indices != list(range(len(turns)))
    if gapped and not stopped:
        problems.append(f"turn indices {indices[:12]} are not 0…{len(turns) - 1} without a gap")
    for t in turns:
        if t.side not in (0, 1):
            problems.append(f"turn {t.index} has side {t.side}")
    if debate.first_side not in (0, 1):
        problems.append(f"first_side {debate.first_side} is not 0 or 1")
        return problems
    nyu = debate.settings.get("nyu") if isinstance(debate.settings, dict) else None
    if nyu is not None:
        consultant = debate.settings.get("consultant_side")
        if debate.protocol == "consultancy" and consultant in (0, 1):
            wrong = [t.index for t in turns if t.side != consultant]
            if wrong:
                problems.append(f"turns {wrong[:12]} are not on the consultant's side {consultant}")
        return problems
    try:
        slots = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side).slots()
    except ProtocolError as exc:
        if turns:
            problems.append(f"its settings do not make a protocol that schedules speeches ({exc})")
        return problems
    if len(turns) > len(slots):
        problems.append(f"has {len(turns)} turns, its protocol {len(slots)}")
    if gapped and stopped:
        missing = sorted(set(range(max(indices) + 1)) - set(indices)) if indices else []
        last_round = slots[max(indices)].round if indices and max(indices) < len(slots) else None
        if len(set(indices)) != len(indices) or last_round is None or any(slots[i].round != last_round for i in missing):
            problems.append(f"turn indices {indices[:12]} have a gap outside the round it stopped in")
    for t in turns:
        if not 0 <= t.index < len(slots):
            continue
        slot = slots[t.index]
        if (t.round, t.side) != (slot.round, slot.side):
            problems.append(
                f"turn {t.index} is round {t.round} side {t.side}, its protocol's slot is "
                f"round {slot.round} side {slot.side} (first_side {debate.first_side})"
            )
    if debate.status == Debate.Status.FINISHED and len(turns) < len(slots):
        problems.append(f"is finished with {len(turns)} of its protocol's {len(slots)} speeches")
    return problems


def _verdict_problems(v: Verdict, debate: Debate, assigned: dict[tuple[int, int], int]) -> list[str]:
    problems: list[str] = []
    if abs(v.p_a + v.p_b - 1.0) > SUM_TOLERANCE:
        problems.append(f"probabilities {v.p_a:g} + {v.p_b:g} do not sum to 1")
    expected = verdict_correct((v.p_a, v.p_b), debate.question.correct_index)
    if v.correct != expected:
        problems.append(
            f"correct={v.correct} but it gives the gold answer ({debate.question.correct_index}) "
            f"{v.probabilities()[debate.question.correct_index]:g} (correct should be {expected})"
        )
    if v.shown_first not in (0, 1):
        problems.append(f"shown_first {v.shown_first} is not 0 or 1")
    elif v.judge_id is not None and (debate.pk, v.judge_id) in assigned:
        if assigned[(debate.pk, v.judge_id)] != v.shown_first:
            problems.append("shown_first differs from the order its judge's assignment recorded")
    elif v.judge_id is None:
        order = debate.settings.get("shown_first", 0) if isinstance(debate.settings, dict) else 0
        if order in (0, 1) and v.shown_first != order:
            problems.append(f"shown_first {v.shown_first} differs from the debate's shown_first {order}")
    return problems


def check_record(debates: Iterable[int] | None = None) -> list[Violation]:
    """Every violation in the record (or in the given debates and their questions); empty when sound."""
    debate_qs = Debate.objects.select_related("question").order_by("pk")
    if debates is not None:
        debate_qs = debate_qs.filter(pk__in=list(debates))
        questions = Question.objects.filter(debates__in=debate_qs).distinct()
    else:
        questions = Question.objects.all()
    out = check_questions(questions.order_by("pk"))
    debate_list = list(debate_qs)
    ids = [d.pk for d in debate_list]
    turns: dict[int, list[Turn]] = defaultdict(list)
    fields = ("debate_id", "index", "round", "side", "text", "quotes")
    for t in Turn.objects.filter(debate_id__in=ids).only(*fields).order_by("debate_id", "index"):
        turns[t.debate_id].append(t)
    verdicts: dict[int, list[Verdict]] = defaultdict(list)
    for v in Verdict.objects.filter(debate_id__in=ids).order_by("pk"):
        verdicts[v.debate_id].append(v)
    assigned = {
        (a.debate_id, a.judge_id): a.shown_first
        for a in Assignment.objects.filter(debate_id__in=ids).only("debate_id", "judge_id", "shown_first")
    }
    indexes: dict[int, SourceIndex] = {}
    for debate in debate_list:
        subject = f"debate {debate.pk}"
        question = debate.question
        if debate.question_hash != question.content_hash():
            changed = f"question {question.external_id} is not what the debate saw (changed since it was created)"
            out.append(Violation(subject, changed))
        out += [Violation(subject, p) for p in _turn_problems(debate, turns[debate.pk])]
        if any(t.quotes or "<" in t.text for t in turns[debate.pk]):
            index = indexes.get(question.pk)
            if index is None:
                index = indexes[question.pk] = SourceIndex(question.source_text)
            for t in turns[debate.pk]:
                out += [Violation(f"{subject} turn {t.index}", p) for p in _quote_problems(t, index)]
        for v in verdicts[debate.pk]:
            out += [Violation(f"{subject} verdict {v.pk}", p) for p in _verdict_problems(v, debate, assigned)]
    return out
