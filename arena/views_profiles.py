"""Debater and AI judge profile pages for researchers: list, one profile, create, edit, and "Test".

Both kinds share these views; :data:`KINDS` says what differs. Writes go through
:mod:`arena.profiles` (versions) and :mod:`judging.profile_checks` (the test a worker runs); the
profile page polls :func:`check_status` until the test is done. Model output (a test's reply) is
rendered as text, in the template and by the page's script.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from arena import profiles
from arena.forms_profiles import DebaterProfileForm, JudgeProfileForm
from arena.roles import researcher_required
from debaters.models import DebaterProfile
from debaters.profiles import default_profile
from judging.ai_verdicts import default_judge_profile
from judging.models import JudgeProfile, ProfileCheck
from judging.profile_checks import request_check


@dataclass(frozen=True)
class Kind:
    slug: str
    label: str
    model: type[DebaterProfile] | type[JudgeProfile]
    form: type[DebaterProfileForm] | type[JudgeProfileForm]


KINDS = {
    "debaters": Kind("debaters", "debater", DebaterProfile, DebaterProfileForm),
    "judges": Kind("judges", "AI judge", JudgeProfile, JudgeProfileForm),
}


def _kind(slug: str) -> Kind:
    try:
        return KINDS[slug]
    except KeyError:
        raise Http404("no such kind of profile") from None


def _profile(kind: Kind, profile_id: int) -> DebaterProfile | JudgeProfile:
    model: type[Model] = kind.model
    found = get_object_or_404(model, pk=profile_id)
    assert isinstance(found, (DebaterProfile, JudgeProfile))
    return found


@researcher_required
def profile_list(request: HttpRequest) -> HttpResponse:
    default_profile()
    default_judge_profile()
    sections = []
    for kind in KINDS.values():
        found = kind.model.objects.order_by("lineage", "-version")
        rows = [(p, profiles.debate_count(p), p.checks.first()) for p in found]
        sections.append((kind, rows))
    return render(request, "arena/profile_list.html", {"sections": sections})


@researcher_required
def profile_detail(request: HttpRequest, kind: str, profile_id: int) -> HttpResponse:
    k = _kind(kind)
    profile = _profile(k, profile_id)
    return render(
        request,
        "arena/profile_detail.html",
        {
            "kind": k,
            "profile": profile,
            "used": profiles.is_used(profile),
            "debates": profiles.debate_count(profile),
            "versions": profiles.versions(profile),
            "checks": list(profile.checks.all()[:5]),
        },
    )


@researcher_required
def profile_create(request: HttpRequest, kind: str) -> HttpResponse:
    k = _kind(kind)
    form = k.form(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = profiles.create_profile(form.build())
        except ValidationError as exc:
            form.add_model_errors(exc)
        else:
            return HttpResponseRedirect(reverse("profile_detail", args=[k.slug, created.pk]))
    status = 400 if request.method == "POST" else 200
    return render(request, "arena/profile_edit.html", {"kind": k, "form": form, "base": None}, status=status)


@researcher_required
def profile_edit(request: HttpRequest, kind: str, profile_id: int) -> HttpResponse:
    k = _kind(kind)
    base = _profile(k, profile_id)
    used = profiles.is_used(base)
    initial = k.form.initial_for(base)  # type: ignore[arg-type]
    if used:
        initial["name"] = f"{base.lineage}-v{profiles.versions(base)[0].version + 1}"
    form = k.form(request.POST or None, initial=initial)
    if not used:
        # Edited in place: the name is how tournaments and commands find it.
        form.fields["name"].disabled = True
    if request.method == "POST" and form.is_valid():
        try:
            saved = profiles.save_edit(base, form.values(), new_name=form.cleaned_data["name"] if used else "")
        except ValidationError as exc:
            form.add_model_errors(exc)
        else:
            return HttpResponseRedirect(reverse("profile_detail", args=[k.slug, saved.pk]))
    status = 400 if request.method == "POST" else 200
    context = {"kind": k, "form": form, "base": base, "used": used}
    return render(request, "arena/profile_edit.html", context, status=status)


@require_POST
@researcher_required
def profile_test(request: HttpRequest, kind: str, profile_id: int) -> HttpResponse:
    profile = _profile(_kind(kind), profile_id)
    check = request_check(profile, created_by=request.user)  # type: ignore[arg-type]
    return HttpResponseRedirect(f"{reverse('profile_detail', args=[kind, profile.pk])}?check={check.pk}#check")


@researcher_required
def check_status(request: HttpRequest, check_id: int) -> JsonResponse:
    check = get_object_or_404(ProfileCheck, pk=check_id)
    return JsonResponse(
        {
            "id": check.pk,
            "status": check.status,
            "done": check.done,
            "reply": check.reply,
            "error": check.error,
            "ready_s": check.ready_s,
            "first_token_s": check.first_token_s,
            "tokens_per_s": check.tokens_per_s,
            "prompt_tokens": check.prompt_tokens,
            "completion_tokens": check.completion_tokens,
            "choice_probs": check.choice_probs,
        }
    )
