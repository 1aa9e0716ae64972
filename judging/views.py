"""Judge pages: a debate to judge, the verdict and the reveal that follows it.

What a judge sees depends on the protocol (docs/protocols.md): the transcript for debates and
consultancies, nothing but the question and answers for the naive judge, and the full source
only for the expert judge. Gold answers never reach the page before this judge's verdict.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone

from arena.engine.protocol import Protocol, ProtocolError
from arena.models import JudgeQuestion
from arena.protocol_services import waiting_round
from arena.ratelimit import post_limit
from arena.roles import judge_required
from judging.deadlines import question_rule
from judging.forms import VerdictForm
from judging.models import Assignment, Verdict
from judging.services import (
    QuestionError,
    VerdictError,
    ask_question,
    debate_protocol,
    submit_human_verdict,
    verdict_open,
    verdict_score,
)

LABELS = ("A", "B")


def _question_positions(protocol: Protocol) -> dict[int, int]:
    """after_round -> index of the first speech of the next round (where the question is shown)."""
    if not protocol.interactive:
        return {}
    try:
        slots = protocol.slots()
    except ProtocolError:
        return {}
    first: dict[int, int] = {}
    for slot in slots:
        first.setdefault(slot.round, slot.index)
    return {r - 1: index for r, index in first.items() if r > 1}


def _post_scope(request: HttpRequest) -> str:
    return "question" if request.POST.get("action") == "question" else "verdict"


@judge_required
@post_limit(_post_scope)
def judge_debate(request: HttpRequest, debate_id: int) -> HttpResponse:
    # A debate not assigned to this judge is a 404, so judges cannot probe which debates exist.
    assignment = get_object_or_404(
        Assignment.objects.select_related("debate", "debate__question"), debate_id=debate_id, judge=request.user
    )
    debate = assignment.debate
    protocol = debate_protocol(debate)
    verdict = Verdict.objects.filter(debate=debate, judge=request.user).first()
    form = VerdictForm()
    question_text = ""
    error = ""
    question_error = ""
    if request.method == "POST" and request.POST.get("action") == "question":
        # Kept on error, so the judge's typing is not lost.
        question_text = request.POST.get("question", "")
        try:
            ask_question(assignment, question_text)
        except QuestionError as exc:
            question_error = str(exc)
        else:
            return HttpResponseRedirect(reverse("judge_debate", args=[debate_id]))
    elif request.method == "POST":
        form = VerdictForm(request.POST)
        if verdict is not None:
            error = "you have already judged this debate"
        elif form.is_valid():
            try:
                submit_human_verdict(
                    assignment, form.cleaned_data["p_first"], form.cleaned_data["p_second"], form.cleaned_data["reason"],
                    debate=debate,  # read just above, with its question: the service need not read it again
                )
            except VerdictError as exc:
                error = str(exc)
            else:
                return HttpResponseRedirect(reverse("judge_debate", args=[debate_id]))
        else:
            error = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
    elif assignment.opened_at is None:
        Assignment.objects.filter(pk=assignment.pk, opened_at__isnull=True).update(opened_at=timezone.now())
    debate.refresh_from_db(fields=["status", "settings"])
    question = debate.question
    shown = assignment.shown_order()
    answers = [{"label": LABELS[pos], "text": question.answers[side], "side": side} for pos, side in enumerate(shown)]
    positions = _question_positions(protocol)
    judge_questions = [
        {"after_round": q.after_round, "before_turn": positions.get(q.after_round, 10_000), "text": q.text}
        for q in JudgeQuestion.objects.filter(debate=debate).order_by("after_round")
    ]
    waiting = waiting_round(debate) if protocol.interactive else None
    if waiting is not None and any(q["after_round"] == waiting for q in judge_questions):
        waiting = None
    open_now, closed_reason = verdict_open(debate, protocol)
    speaker = "Consultant" if protocol.speakers == 1 else "Debater"
    context: dict[str, object] = {
        "debate": debate,
        "protocol": protocol,
        "rules": protocol.scoring_rules(),
        "required_turns": protocol.required_turns(),
        "total_turns": protocol.total_turns(),
        "question_text": question.question,
        "answers": answers,
        "form": form,
        "error": error,
        "verdict": verdict,
        "verdict_open": open_now,
        "verdict_closed_reason": closed_reason,
        "judge_questions": judge_questions,
        "waiting_round": waiting,
        "question_rule": question_rule(debate) if protocol.interactive else None,
        "question_draft": question_text,
        "question_error": question_error,
        # The source reaches a judge's browser only under the expert-judge protocol.
        "source": {"title": question.source_title, "text": question.source_text} if protocol.judge_sees_source() else None,
        "client_config": {
            "debateId": debate.pk,
            "wsPath": f"/ws/debates/{debate.pk}/",
            # By letter only: nothing on a judge's page says which answer is stored first.
            "answerTexts": {str(a["label"]): a["text"] for a in answers},
            "speakerNoun": speaker,
            "protocol": protocol.name,
            "transcript": protocol.judge_sees_transcript(),
            "minTurns": protocol.required_turns(),
            "totalTurns": protocol.total_turns(),
            "interactive": protocol.interactive,
            "judgeQuestions": judge_questions,
        },
    }
    if verdict is not None:
        # Only now may the gold answer, the score and the source title reach this judge.
        gold_side = question.correct_index
        score = verdict_score(verdict, debate, protocol.scoring_rules())
        context["reveal"] = {
            "gold_label": next(a["label"] for a in answers if a["side"] == gold_side),
            "gold_text": question.answers[gold_side],
            "correct": verdict.correct,
            "p_gold": verdict.p_correct(gold_side),
            "log_score": verdict.log_score(gold_side),
            "score": score,
            "source_title": question.source_title,
        }
    status = 400 if error or question_error else 200
    return render(request, "judging/judge_debate.html", context, status=status)
