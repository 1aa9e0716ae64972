"""Researcher pages: start debates, watch them, read everything (prompts, source, gold)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from arena import services
from arena.constitution import default_constitution
from arena.engine.protocol import Protocol, ProtocolError, ProtocolSettings, make_protocol
from arena.forms import NewDebateForm
from arena.models import Debate, QuestionSet
from arena.protocol_services import waiting_round
from arena.question_search import search_questions
from arena.roles import is_judge, is_researcher, researcher_required
from debaters.profiles import default_profile, evidence_profile
from judging.models import Verdict


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
        # The two shipped styles face each other unless the researcher picks otherwise.
        form = NewDebateForm(initial={"debater_a": default_profile(), "debater_b": evidence_profile()})
    debates, filters = filter_debates(Debate.objects.all(), request.GET)
    page = Paginator(
        debates.select_related("question", "debater_a", "debater_b").order_by("-created_at"), 25
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "arena/debates.html",
        {
            "form": form, "page": page, "filters": filters, "filter_query": urlencode(filters),
            "question_sets": QuestionSet.objects.order_by("name"),
        },
    )


@researcher_required
def question_search(request: HttpRequest) -> JsonResponse:
    """The new-debate form's question picker: ``?q=TEXT&set=ID`` → ``{"results": [...], "more": bool}``."""
    raw_set = request.GET.get("set", "")
    hits, more = search_questions(request.GET.get("q", ""), int(raw_set) if raw_set.isdigit() else None)
    return JsonResponse({"results": [hit.to_dict() for hit in hits], "more": more})


DEBATE_FILTERS = ("tournament", "protocol", "debater", "judge")


def filter_debates(debates: QuerySet[Debate], params: Mapping[str, str]) -> tuple[QuerySet[Debate], dict[str, str]]:
    """The debates list narrowed by ?tournament=ID, protocol=NAME, debater=NAME (either side) and
    judge=LABEL (a verdict by that judge): the links behind the analysis plots' points. Returns
    the queryset and the filters applied (unknown or malformed values are ignored)."""
    applied: dict[str, str] = {}
    for key in DEBATE_FILTERS:
        value = (params.get(key) or "").strip()[:300]
        if not value or (key == "tournament" and not value.isdigit()):
            continue
        applied[key] = value
        if key == "tournament":
            debates = debates.filter(tournament_id=int(value))
        elif key == "protocol":
            debates = debates.filter(protocol=value)
        elif key == "debater":
            debates = debates.filter(Q(debater_a__name=value) | Q(debater_b__name=value))
        else:
            debates = debates.filter(pk__in=Verdict.objects.filter(judge_label=value).values("debate_id"))
    return debates, applied


@researcher_required
def debate_detail(request: HttpRequest, debate_id: int) -> HttpResponse:
    debate = get_object_or_404(
        Debate.objects.select_related("question", "constitution", "debater_a", "debater_b"), pk=debate_id
    )
    protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side)
    turns = list(debate.turns.order_by("index").prefetch_related("revisions", "candidates"))
    questions = list(debate.judge_questions.select_related("asked_by").order_by("after_round"))
    speaker = "Consultant" if protocol.speakers == 1 else "Debater"
    context = {
        "debate": debate,
        "protocol": protocol,
        "rules": protocol.scoring_rules(),
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
