"""Judge pages: the queue, a debate to judge, the verdict and the reveal that follows it."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone

from arena.models import Debate
from arena.roles import judge_required
from judging.forms import VerdictForm
from judging.models import Assignment, Verdict
from judging.services import VerdictError, submit_human_verdict

LABELS = ("A", "B")


@judge_required
def queue(request: HttpRequest) -> HttpResponse:
    assignments = (
        Assignment.objects.filter(judge=request.user)
        .select_related("debate", "debate__question")
        .order_by("-created_at")
    )
    judged = set(Verdict.objects.filter(judge=request.user).values_list("debate_id", flat=True))
    pending = [a for a in assignments if a.debate_id not in judged and a.debate.status != Debate.Status.FAILED]
    done = [a for a in assignments if a.debate_id in judged]
    return render(request, "judging/queue.html", {"pending": pending, "done": done})


@judge_required
def judge_debate(request: HttpRequest, debate_id: int) -> HttpResponse:
    # A debate not assigned to this judge is a 404, so judges cannot probe which debates exist.
    assignment = get_object_or_404(
        Assignment.objects.select_related("debate", "debate__question"), debate_id=debate_id, judge=request.user
    )
    debate = assignment.debate
    verdict = Verdict.objects.filter(debate=debate, judge=request.user).first()
    form = VerdictForm()
    error = ""
    if request.method == "POST":
        form = VerdictForm(request.POST)
        if verdict is not None:
            error = "you have already judged this debate"
        elif form.is_valid():
            try:
                submit_human_verdict(
                    assignment, form.cleaned_data["p_first"], form.cleaned_data["p_second"], form.cleaned_data["reason"]
                )
            except VerdictError as exc:
                error = str(exc)
            else:
                return HttpResponseRedirect(reverse("judge_debate", args=[debate_id]))
        else:
            error = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
    elif assignment.opened_at is None:
        Assignment.objects.filter(pk=assignment.pk, opened_at__isnull=True).update(opened_at=timezone.now())
    question = debate.question
    shown = assignment.shown_order()
    answers = [{"label": LABELS[pos], "text": question.answers[side], "side": side} for pos, side in enumerate(shown)]
    context: dict[str, object] = {
        "debate": debate,
        "question_text": question.question,
        "answers": answers,
        "form": form,
        "error": error,
        "verdict": verdict,
        "client_config": {
            "debateId": debate.pk,
            "wsPath": f"/ws/debates/{debate.pk}/",
            "sideLabels": {str(a["side"]): a["label"] for a in answers},
            "sideAnswers": {str(a["side"]): a["text"] for a in answers},
        },
    }
    if verdict is not None:
        # Only now may the gold answer, the score and the source title reach this judge.
        gold_side = question.correct_index
        context["reveal"] = {
            "gold_label": next(a["label"] for a in answers if a["side"] == gold_side),
            "gold_text": question.answers[gold_side],
            "correct": verdict.correct,
            "p_gold": verdict.p_correct(gold_side),
            "log_score": verdict.log_score(gold_side),
            "source_title": question.source_title,
        }
    return render(request, "judging/judge_debate.html", context, status=400 if error else 200)
