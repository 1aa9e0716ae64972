"""Researcher pages: start debates, watch them, read everything (prompts, source, gold)."""

from __future__ import annotations

import secrets

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from arena import services
from arena.constitution import default_constitution
from arena.engine.protocol import Protocol, ProtocolError, ProtocolSettings, make_protocol
from arena.forms import NewDebateForm
from arena.models import Debate
from arena.protocol_services import waiting_round
from arena.roles import is_judge, is_researcher, researcher_required
from debaters.profiles import default_profile


@login_required
def home(request: HttpRequest) -> HttpResponse:
    if is_researcher(request.user):
        return redirect("debates")
    if is_judge(request.user):
        return redirect("judge_queue")
    return render(request, "no_role.html", status=403)


@researcher_required
def debates(request: HttpRequest) -> HttpResponse:
    default_profile()
    default_constitution()
    if request.method == "POST":
        form = NewDebateForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            # The seed is drawn here so that a consultancy's side, drawn from it, is stored at once.
            seed = secrets.randbelow(2**31)
            debate = services.create_debate(
                question=data["question"],
                debater_a=data["debater_a"],
                debater_b=data["debater_b"],
                limits=form.protocol_settings(data["debater_a"].context_tokens, seed),
                protocol=data["protocol"],
                constitution=data["constitution"],
                created_by=request.user,
                judges=data["judges"],
                seed=seed,
            )
            return HttpResponseRedirect(reverse("debate_detail", args=[debate.pk]))
    else:
        form = NewDebateForm(initial={"debater_a": default_profile(), "debater_b": default_profile()})
    page = Paginator(
        Debate.objects.select_related("question", "debater_a", "debater_b").order_by("-created_at"), 25
    ).get_page(request.GET.get("page"))
    return render(request, "arena/debates.html", {"form": form, "page": page})


@researcher_required
def debate_detail(request: HttpRequest, debate_id: int) -> HttpResponse:
    debate = get_object_or_404(
        Debate.objects.select_related("question", "constitution", "debater_a", "debater_b"), pk=debate_id
    )
    protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed)
    turns = list(debate.turns.order_by("index").prefetch_related("revisions", "candidates"))
    questions = list(debate.judge_questions.select_related("asked_by").order_by("after_round"))
    speaker = "Consultant" if protocol.speakers == 1 else "Debater"
    context = {
        "debate": debate,
        "protocol": protocol,
        "rules": protocol.rules,
        "options": ProtocolSettings.from_settings(debate.settings),
        "open_choice": debate.settings.get("open_choice"),
        "consultant_side": protocol.speaking_sides()[0] if protocol.speakers == 1 and protocol.speaking_sides() else None,
        "waiting_round": waiting_round(debate),
        "turns": turns,
        "judge_questions": questions,
        "violation_count": sum(len(t.violations or []) for t in turns),
        "verdicts": debate.verdicts.select_related("judge").order_by("created_at"),
        "assignments": debate.assignments.select_related("judge"),
        "answers": list(enumerate(debate.question.answers)),
        "client_config": {
            "debateId": debate.pk,
            "wsPath": f"/ws/debates/{debate.pk}/",
            "sideLabels": {"0": "1", "1": "2"},
            "sideAnswers": {"0": debate.question.answers[0], "1": debate.question.answers[1]},
            "speakerNoun": speaker,
            "totalTurns": protocol.total_turns(),
            "judgeQuestions": [
                {"after_round": q.after_round, "before_turn": _first_turn_of_round(protocol, q.after_round + 1), "text": q.text}
                for q in questions
            ],
        },
    }
    return render(request, "arena/debate_detail.html", context)


def _first_turn_of_round(protocol: Protocol, round_: int) -> int:
    try:
        return min((s.index for s in protocol.slots() if s.round == round_), default=10_000)
    except ProtocolError:
        return 10_000


@require_POST
@researcher_required
def debate_retry(request: HttpRequest, debate_id: int) -> HttpResponse:
    get_object_or_404(Debate, pk=debate_id)
    services.requeue_debate(debate_id)
    return HttpResponseRedirect(reverse("debate_detail", args=[debate_id]))
