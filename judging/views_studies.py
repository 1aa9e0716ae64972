"""Pages of human judging at scale: the judge's queue with "Next debate", studies, invitations and
sign-up, and the judge-quality page. Views validate and call ``judging.studies``,
``judging.invitations`` and ``judging.quality``; they write nothing themselves."""

from __future__ import annotations

import math
import statistics

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from arena.models import Debate, Question
from arena.ratelimit import post_limit
from arena.roles import JUDGE, judge_required, researcher_required
from judging import human_ai, invitations, quality, studies
from judging.forms_studies import (
    AddDebatesForm,
    HandAssignForm,
    InvitationForm,
    SignupForm,
    StoryExposureForm,
    StudyForm,
)
from judging.models import Assignment, Invitation, StoryExposure, Study, StudySlot, Verdict

GONE = (Debate.Status.FAILED, Debate.Status.CANCELLED)


# --- the judge -----------------------------------------------------------------------------------


@judge_required
def queue(request: HttpRequest) -> HttpResponse:
    """What waits for this judge, what they did (with their scores), and a "Next debate" button
    per open study. Failed and cancelled debates leave the waiting list with a note."""
    assignments = list(
        Assignment.objects.filter(judge=request.user)
        .select_related("debate", "debate__question")
        .order_by("-created_at")
    )
    verdicts = {v.debate_id: v for v in Verdict.objects.filter(judge=request.user).select_related("debate__question")}
    leases = {
        s.entry.debate_id: s
        for s in StudySlot.objects.filter(judge=request.user, verdict__isnull=True).select_related("entry__study")
    }
    pending = [a for a in assignments if a.debate_id not in verdicts and a.debate.status not in GONE]
    gone = [a for a in assignments if a.debate_id not in verdicts and a.debate.status in GONE]
    done = []
    for a in assignments:
        verdict = verdicts.get(a.debate_id)
        if verdict is not None:
            gold = a.debate.question.correct_index
            done.append({"assignment": a, "verdict": verdict, "log_score": verdict.log_score(gold)})
    scores = [d["log_score"] for d in done]
    summary = {
        "count": len(done),
        "correct": sum(1 for d in done if d["verdict"].correct),
        "mean_log_score": statistics.fmean(scores) if scores else None,
    }
    invited = Invitation.objects.filter(used_by=request.user, study__isnull=False).select_related("study").first()
    invited_study = invited.study if invited is not None else None
    open_studies = list(studies.visible_studies(request.user).order_by("-created_at"))  # type: ignore[arg-type]
    open_studies.sort(key=lambda s: s != invited_study)  # stable: the study they were invited for first
    context = {
        "pending": [{"assignment": a, "lease": leases.get(a.debate_id)} for a in pending],
        "gone": gone,
        "done": done,
        "summary": summary,
        "studies": open_studies,
        "invited_study": invited_study,
        # Only the reasons study_next gave, never text from the address (a link could plant any text).
        "notice": " ".join(str(m) for m in messages.get_messages(request)),
    }
    return render(request, "judging/queue.html", context)


@require_POST
@judge_required
def study_next(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(studies.visible_studies(request.user), pk=study_id)  # type: ignore[arg-type]
    claim = studies.next_debate(study, request.user)  # type: ignore[arg-type]
    if claim.assignment is None:
        messages.info(request, claim.reason)
        return HttpResponseRedirect(reverse("judge_queue"))
    return HttpResponseRedirect(reverse("judge_debate", args=[claim.assignment.debate_id]))


@judge_required
def study_leaderboard(request: HttpRequest, study_id: int) -> HttpResponse:
    visible = studies.visible_studies(request.user)  # type: ignore[arg-type]
    study = get_object_or_404(visible, pk=study_id, leaderboard=True)
    board = quality.leaderboard(Verdict.objects.filter(debate__study_entries__study=study))
    return render(request, "judging/leaderboard.html", {"study": study, "board": board})


def join(request: HttpRequest, token: str) -> HttpResponse:
    """The sign-up page behind an invitation link: pick a username and password, become a judge."""
    try:
        invitation = invitations.open_invitation(token)
    except invitations.InvitationError as exc:
        return render(request, "judging/join.html", {"fatal": str(exc)}, status=410)
    form = SignupForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            user = invitations.accept_invitation(token, form.cleaned_data["username"], form.cleaned_data["password"])
        except invitations.InvitationError as exc:
            error = str(exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return HttpResponseRedirect(reverse("judge_queue"))
    status = 400 if request.method == "POST" else 200
    return render(request, "judging/join.html", {"form": form, "error": error, "invitation": invitation}, status=status)


# --- the researcher ------------------------------------------------------------------------------


@researcher_required
def study_list(request: HttpRequest) -> HttpResponse:
    form = StudyForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        debates = data.pop("debate_ids")
        try:
            study = studies.create_study(created_by=request.user, debates=debates, **data)  # type: ignore[arg-type]
        except (studies.StudyError, ValueError) as exc:
            error = str(exc)
        else:
            return HttpResponseRedirect(reverse("study_detail", args=[study.pk]))
    rows = [(s, studies.progress(s)) for s in Study.objects.order_by("-created_at")[:100]]
    status = 400 if request.method == "POST" else 200
    return render(request, "judging/studies.html", {"form": form, "rows": rows, "error": error}, status=status)


@researcher_required
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study.objects.select_related("tournament", "question_set", "ai_questioner"), pk=study_id)
    form = HandAssignForm(request.POST or None)
    message = error = ""
    if request.method == "POST" and request.POST.get("action") == "assign" and form.is_valid():
        debate = Debate.objects.filter(pk=form.cleaned_data["debate"]).select_related("question").first()
        if debate is None:
            error = f"no debate with id {form.cleaned_data['debate']}"
        else:
            try:
                studies.assign_by_hand(debate, form.cleaned_data["judge"])
            except studies.ExposureError as exc:
                error = f"refused: {exc}"
            else:
                message = f"debate {debate.pk} assigned to {form.cleaned_data['judge']}"
    elif request.method == "POST" and request.POST.get("action") in ("close", "open"):
        Study.objects.filter(pk=study.pk).update(active=request.POST["action"] == "open")
        return HttpResponseRedirect(reverse("study_detail", args=[study.pk]))
    elif request.method == "POST" and request.POST.get("action") in ("add_member", "remove_member"):
        adding = request.POST["action"] == "add_member"
        try:
            judge = studies.set_member(study, request.POST.get("username", ""), adding)
        except studies.StudyError as exc:
            error = str(exc)
        else:
            message = f"{judge} {'added to' if adding else 'removed from'} the members"
    elif request.method == "POST" and request.POST.get("action") == "refresh":
        message = f"{studies.refresh(study)} debates added"
    elif request.method == "POST" and request.POST.get("action") == "add":
        add_form = AddDebatesForm(request.POST)
        if add_form.is_valid():
            added = studies.add_debates(study, add_form.cleaned_data["debate_ids"], gold=add_form.cleaned_data["gold"])
            message = f"{added} debates added" + (" as gold checks" if add_form.cleaned_data["gold"] else "")
        else:
            error = "; ".join(" ".join(errs) for errs in add_form.errors.values())
    slots = (
        StudySlot.objects.filter(entry__study=study, judge__isnull=False)
        .select_related("entry", "judge", "verdict")
        .order_by("entry__debate_id", "index")
    )
    flags = studies.exposure_flags(Verdict.objects.filter(debate__study_entries__study=study))
    deactivated = (
        Verdict.objects.filter(debate__study_entries__study=study, judge_id__in=quality.deactivated_judges())
        .select_related("judge")
        .order_by("pk")
    )
    context = {
        "study": study,
        "members": study.members.order_by("username"),
        "rules": studies.rules_of(study),
        "progress": studies.progress(study),
        "slots": slots[:500],
        "flags": sorted(flags.items()),
        "deactivated": deactivated[:500],
        "form": form,
        "add_form": AddDebatesForm(),
        "message": message,
        "error": error,
    }
    return render(request, "judging/study_detail.html", context, status=400 if error else 200)


@researcher_required
@post_limit("invitation")
def judges_page(request: HttpRequest) -> HttpResponse:
    """Judge quality, the chance-level flag with its evidence, exclusion, deactivation, invitations."""
    threshold = _float_param(request, "threshold", quality.DEFAULT_THRESHOLD, 0.01, 0.99)
    alpha = _float_param(request, "alpha", quality.DEFAULT_ALPHA, 0.001, 0.5)
    invite_form = InvitationForm(request.POST if request.POST.get("action") == "invite" else None)
    new_link = ""
    if request.method == "POST" and request.POST.get("action") == "invite" and invite_form.is_valid():
        data = invite_form.cleaned_data
        _, token = invitations.create_invitation(
            created_by=request.user, study=data["study"], note=data["note"], days=data["days"]  # type: ignore[arg-type]
        )
        new_link = request.build_absolute_uri(reverse("join", args=[token]))
    users = get_user_model()
    judges = users.objects.filter(groups__name=JUDGE).order_by("username")
    context = {
        "rows": quality.judge_quality(threshold=threshold, alpha=alpha),
        "threshold": threshold,
        "alpha": alpha,
        "e_bar": 1 / alpha,
        "judges": judges,
        "invite_form": invite_form,
        "new_link": new_link,
        "invitations": Invitation.objects.select_related("study", "used_by")[:50],
    }
    return render(request, "judging/judges.html", context)


@require_POST
@researcher_required
def judge_action(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = get_object_or_404(get_user_model(), pk=judge_id, groups__name=JUDGE)
    action = request.POST.get("action")
    if action == "deactivate":
        invitations.deactivate_judge(judge, request.POST.get("note", "")[:1000])
    elif action == "reactivate":
        invitations.reactivate_judge(judge)
    elif action in ("exclude", "include"):
        invitations.set_excluded(judge, action == "exclude")
    return HttpResponseRedirect(reverse("judges_page"))


@researcher_required
def judge_stories(request: HttpRequest, judge_id: int) -> HttpResponse:
    """The stories a judge read outside judging (``StoryExposure``): the read-story rule keeps
    them from debates on those stories. Researchers record and remove them here."""
    judge = get_object_or_404(get_user_model(), pk=judge_id, groups__name=JUDGE)
    form = StoryExposureForm(request.POST if request.POST.get("action") == "add" else None)
    error = ""
    if request.method == "POST" and request.POST.get("action") == "add":
        if form.is_valid():
            try:
                recorded = studies.record_exposure(judge, form.cleaned_data["story"], form.cleaned_data["role"])
            except studies.StudyError as exc:
                error = str(exc)
            else:
                text = f"recorded: {judge} read {recorded.exposure.story!r} as {recorded.exposure.role}"
                if recorded.flagged_verdicts:
                    text += (
                        f"; {recorded.flagged_verdicts} verdict(s) {judge} gave on this story are now flagged"
                        " (read-story)"
                    )
                messages.success(request, text)
                return HttpResponseRedirect(reverse("judge_stories", args=[judge.pk]))
        else:
            error = "; ".join(" ".join(errs) for errs in form.errors.values())
    elif request.method == "POST" and request.POST.get("action") == "remove":
        try:
            gone = studies.forget_exposure(judge, _int(request.POST.get("exposure")))
        except studies.StudyError as exc:
            error = str(exc)
        else:
            messages.success(request, f"removed: {judge} read {gone.story!r} as {gone.role}")
            return HttpResponseRedirect(reverse("judge_stories", args=[judge.pk]))
    elif request.method == "POST":
        error = "unknown action"
    # The titles the arena knows, offered as the form's suggestions (a misspelt title is refused).
    titles = Question.objects.exclude(source_title="").order_by("source_title").values_list("source_title", flat=True)
    context = {
        "judge": judge,
        "exposures": StoryExposure.objects.filter(judge=judge).order_by("story", "role"),
        "form": form,
        "error": error,
        "titles": titles.distinct()[:2000],
    }
    return render(request, "judging/judge_stories.html", context, status=400 if error else 200)


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return 0


@researcher_required
def human_vs_ai(request: HttpRequest) -> HttpResponse:
    include = request.GET.get("include_flagged") == "1"
    deactivated = request.GET.get("include_deactivated") == "1"
    context = {
        "comparison": human_ai.compare(include_flagged=include, include_deactivated=deactivated),
        "include_flagged": include,
        "include_deactivated": deactivated,
    }
    return render(request, "judging/human_ai.html", context)


def _float_param(request: HttpRequest, name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(request.GET.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and low <= value <= high else default
