"""Researcher pages for tournaments: define one (YAML or form fields), follow its progress live,
pause, resume or cancel it. Views validate and call :mod:`arena.tournaments`; nothing runs here."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml
from django import forms
from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from arena import tournaments
from arena.engine.protocol import PROTOCOLS
from arena.importing import ensure_sample_set
from arena.models import Constitution, QuestionSet, Tournament
from arena.roles import researcher_required
from arena.tournaments import TournamentConfigError, TournamentStateError
from debaters.models import DebaterProfile
from debaters.profiles import default_profile
from judging.ai_verdicts import default_judge_profile
from judging.models import JudgeProfile, Study

MAX_YAML = 20_000
DEBATES_PAGE = 50


class TournamentForm(forms.Form):
    """Either a YAML definition, or the common fields (the YAML wins when both are given)."""

    definition = forms.CharField(
        required=False,
        max_length=MAX_YAML,
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "placeholder": tournaments.EXAMPLE}),
        label="YAML definition (optional: overrides the fields below)",
    )
    name = forms.CharField(required=False, max_length=200)
    question_set = forms.ModelChoiceField(queryset=QuestionSet.objects.order_by("name"), required=False)
    question_ids = forms.CharField(
        required=False, max_length=MAX_YAML, widget=forms.Textarea(attrs={"rows": 2}),
        label="Question ids (one per line or comma-separated; empty: the whole set)",
    )
    question_match = forms.CharField(required=False, max_length=200, label="Only questions containing")
    question_limit = forms.IntegerField(min_value=1, required=False, label="Questions (first N; empty for all)")
    constitution = forms.ModelChoiceField(
        queryset=Constitution.objects.order_by("name", "-version"), required=False,
        label="Constitution version (empty: the default)",
    )
    debaters = forms.ModelMultipleChoiceField(
        queryset=DebaterProfile.objects.exclude(backend=tournaments.IMPORTED_BACKEND).order_by("name"), required=False
    )
    protocols = forms.MultipleChoiceField(choices=(), required=False, initial=["debate"])
    judges = forms.ModelMultipleChoiceField(queryset=JudgeProfile.objects.order_by("name"), required=False, label="AI judges")
    # Not required, so that a YAML definition alone is a complete form; validate() checks ranges.
    rounds = forms.IntegerField(required=False, initial=2)
    max_tokens = forms.IntegerField(required=False, initial=120, label="Max tokens per speech")
    word_limit = forms.IntegerField(required=False, initial=100, label="Word limit per speech")
    context_tokens = forms.IntegerField(required=False, initial=600, label="Story excerpt tokens (empty: whole story)")
    seed = forms.IntegerField(required=False, initial=0)
    chunk_size = forms.IntegerField(required=False, initial=tournaments.DEFAULT_CHUNK, label="Debates per worker task")
    self_play = forms.BooleanField(required=False, label="Self-play too")
    # The YAML ``human:`` block (docs/judging.md). Not required and not range-checked here: the
    # definition's own validation (judging.studies.parse_human_verdicts) judges them, as for YAML.
    human = forms.BooleanField(
        required=False, label="Human verdicts too",
        help_text="A study collects human verdicts next to the AI panel; judges get them through \"Next debate\".",
    )
    human_fraction = forms.FloatField(
        required=False, initial=1.0, label="Share of debates judged by humans",
        help_text="Above 0, at most 1: a random share of the debates, drawn once per debate (1: all).",
    )
    human_verdicts = forms.IntegerField(
        required=False, initial=1, label="Human verdicts per debate", help_text="1 to 50 judges on each chosen debate."
    )
    human_mode = forms.ChoiceField(
        choices=Study.Mode.choices, initial=Study.Mode.OFFLINE, required=False, label="Human judges watch",
        help_text="live: the debate as it runs; offline: the finished transcript (as NYU's offline judges).",
    )
    human_lease = forms.IntegerField(
        required=False, label="Lease (seconds)",
        help_text=f"How long a judge holds a debate they took (empty: ARENA_JUDGE_LEASE_SECONDS, "
        f"{settings.ARENA_JUDGE_LEASE_SECONDS}); an abandoned one returns to the pool.",
    )
    # A select, not a checkbox: this rule is on by default, and an unticked box (or a POST without the
    # field) could not be told from one left alone. Empty or absent: the YAML default, true.
    human_distinct_story = forms.TypedChoiceField(
        choices=[("true", "yes"), ("false", "no")],
        coerce=lambda value: value == "true",
        empty_value=None,
        initial="true",
        required=False,
        label="One debate per story per judge",
        help_text="Yes (default): a judge never judges two debates on the same story, since after a verdict the "
        "page reveals the gold answer and the story's title, so a second judgment on it would be contaminated.",
    )
    human_per_judge_cap = forms.IntegerField(
        required=False,
        label="Per-judge cap",
        help_text="At most this many of the study's debates per judge (a positive integer; empty: no cap), "
        "so that one prolific judge cannot dominate the study.",
        # Django refuses a non-number before the definition's validation sees it; word it as that does.
        error_messages={"invalid": '"Per-judge cap" must be a positive integer (or left empty)'},
    )
    human_leaderboard = forms.BooleanField(
        required=False,
        label="Leaderboard for judges",
        help_text="Judges see the study's judges ranked by mean log score (NYU's measure). Off by default: "
        "a judge sees only their own history on their queue.",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["protocols"].choices = [(name, getattr(cls, "title", "") or name) for name, cls in PROTOCOLS.items()]  # type: ignore[attr-defined]

    def definition_dict(self) -> dict[str, object]:
        """The definition to validate; raises :class:`TournamentConfigError` for bad YAML."""
        data = self.cleaned_data
        if (data.get("definition") or "").strip():
            return tournaments.parse_yaml(data["definition"])
        questions: dict[str, object] = {"set": data["question_set"].name if data.get("question_set") else ""}
        ids = [i for i in re.split(r"[\s,]+", data.get("question_ids") or "") if i]
        if ids:
            questions["ids"] = ids
        if (data.get("question_match") or "").strip():
            questions["match"] = data["question_match"].strip()
        if data.get("question_limit"):
            questions["limit"] = data["question_limit"]
        limits: dict[str, object] = {
            key: data[key] for key in ("rounds", "max_tokens", "word_limit") if data.get(key) is not None
        }
        limits["context_tokens"] = data.get("context_tokens")
        return {
            "name": data.get("name") or "",
            "questions": questions,
            "debaters": [d.name for d in data.get("debaters") or []],
            "protocols": list(data.get("protocols") or []),
            "judges": [j.name for j in data.get("judges") or []],
            "limits": limits,
            "seed": data.get("seed") if data.get("seed") is not None else 0,
            "chunk_size": data.get("chunk_size") or tournaments.DEFAULT_CHUNK,
            "self_play": bool(data.get("self_play")),
            **({"constitution": data["constitution"].label} if data.get("constitution") else {}),
            **({"human": self._human_block()} if data.get("human") else {}),
        }

    def _human_block(self) -> dict[str, object]:
        """The ``human:`` block the fields make; empty fields take the YAML defaults."""
        data = self.cleaned_data
        block: dict[str, object] = {}
        for field, key in (
            ("human_fraction", "fraction"),
            ("human_verdicts", "verdicts"),
            ("human_mode", "mode"),
            ("human_lease", "lease_seconds"),
            ("human_distinct_story", "distinct_story"),
            ("human_per_judge_cap", "per_judge_cap"),
        ):
            if data.get(field) not in (None, ""):
                block[key] = data[field]
        # A checkbox has no "empty": unticked is the default (off), so only a ticked one is written.
        if data.get("human_leaderboard"):
            block["leaderboard"] = True
        return block

    def uses_fields(self) -> bool:
        """Whether the definition comes from the form's fields (no YAML was pasted)."""
        return not (self.cleaned_data.get("definition") or "").strip()


# Problems are worded for YAML; a definition from the form's fields names the field instead.
FIELD_WORDS = {
    "(or set self_play: true)": '(or tick "Self-play too")',
    "questions.limit": '"Questions (first N)"',
    "questions.match": '"Only questions containing"',
    "questions.set must name a question set": "choose a question set",
    "human.fraction": '"Share of debates judged by humans"',
    "human.verdicts": '"Human verdicts per debate"',
    "human.mode": '"Human judges watch"',
    "human.lease_seconds": '"Lease (seconds)"',
    "human.distinct_story": '"One debate per story per judge"',
    "human.per_judge_cap": '"Per-judge cap"',
    "human.leaderboard": '"Leaderboard for judges"',
    "(or left out)": "(or left empty)",
}


def for_form(problems: list[str]) -> list[str]:
    """The validation problems in the form's words (its labels, not YAML keys)."""
    out = []
    for problem in problems:
        for yaml_words, field_words in FIELD_WORDS.items():
            problem = problem.replace(yaml_words, field_words)
        out.append(problem)
    return out


@dataclass(frozen=True)
class Preview:
    """What a definition would create, shown before anything is created."""

    debates: int
    ai_verdicts: int
    questions: int
    judges: int
    # Expected, not exact: each debate is drawn into the human study with probability ``fraction``.
    human_verdicts: int = 0


def preview(spec: tournaments.TournamentSpec) -> Preview:
    debates = len(tournaments.plan(spec))
    human = round(debates * spec.human.fraction) * spec.human.verdicts if spec.human else 0
    return Preview(debates, debates * len(spec.judges), len(spec.questions), len(spec.judges), human)


@researcher_required
def tournament_list(request: HttpRequest) -> HttpResponse:
    # What a fresh install needs to define a first tournament without the admin.
    sample = ensure_sample_set()
    default_profile()
    default_judge_profile()
    problems: list[str] = []
    planned: Preview | None = None
    if request.method == "POST":
        form = TournamentForm(request.POST)
        if form.is_valid():
            try:
                spec = tournaments.validate(form.definition_dict())
            except TournamentConfigError as exc:
                problems = for_form(exc.problems) if form.uses_fields() else exc.problems
            else:
                if "preview" in request.POST:
                    # Count only: nothing is created until "Create and start".
                    planned = preview(spec)
                else:
                    tournament = tournaments.create_tournament(spec, created_by=request.user)  # type: ignore[arg-type]
                    tournaments.start(tournament.pk)
                    return HttpResponseRedirect(reverse("tournament_detail", args=[tournament.pk]))
    else:
        form = TournamentForm(
            initial={"question_set": sample, "question_limit": 2, "judges": [default_judge_profile()]}
        )
    page = Paginator(Tournament.objects.order_by("-created_at"), 25).get_page(request.GET.get("page"))
    rows = [(t, tournaments.progress(t)) for t in page]
    return render(
        request, "arena/tournaments.html", {"form": form, "problems": problems, "preview": planned, "page": page, "rows": rows}
    )


@researcher_required
def tournament_detail(request: HttpRequest, tournament_id: int) -> HttpResponse:
    tournament = get_object_or_404(Tournament, pk=tournament_id)
    progress = tournaments.progress(tournament)
    debates = Paginator(
        tournament.debates.select_related("question", "debater_a", "debater_b").order_by("pk"), DEBATES_PAGE
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "arena/tournament_detail.html",
        {
            "tournament": tournament,
            "progress": progress,
            "debates": debates,
            "definition_yaml": yaml.safe_dump(tournament.config or {}, sort_keys=False, allow_unicode=True, width=100),
            "client_config": {
                "progressUrl": reverse("tournament_progress", args=[tournament.pk]) + f"?page={debates.number}",
            },
        },
    )


@require_GET
@researcher_required
def tournament_progress(request: HttpRequest, tournament_id: int) -> JsonResponse:
    tournament = get_object_or_404(Tournament, pk=tournament_id)
    # The statuses of the debates on the page the researcher looks at (?page=N), so its table stays live.
    page = Paginator(tournament.debates.order_by("pk").only("pk", "status"), DEBATES_PAGE).get_page(request.GET.get("page"))
    return JsonResponse({
        "id": tournament.pk,
        "error": tournament.error,
        **tournaments.progress(tournament).as_dict(),
        "debates": {str(d.pk): d.status for d in page},
    })


def _control(action: str):  # type: ignore[no-untyped-def]
    @require_POST
    @researcher_required
    def view(request: HttpRequest, tournament_id: int) -> HttpResponse:
        get_object_or_404(Tournament, pk=tournament_id)
        try:
            getattr(tournaments, action)(tournament_id)
        except TournamentStateError as exc:
            return render(request, "arena/tournament_error.html", {"message": str(exc), "tournament_id": tournament_id}, status=409)
        return HttpResponseRedirect(reverse("tournament_detail", args=[tournament_id]))

    view.__name__ = f"tournament_{action}"
    return view


tournament_pause = _control("pause")
tournament_resume = _control("resume")
tournament_cancel = _control("cancel")
