"""Constitution pages for researchers: versions, one version, edit (a new version), diff, usage.

Editing never changes a stored version: the form's POST goes to ``arena.constitution.new_version``.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from arena.constitution import (
    ConstitutionError,
    constitutions_with_usage,
    default_constitution,
    diff,
    latest_version_numbers,
    new_version,
    principles_as_text,
    rules_as_json,
)
from arena.forms import ConstitutionForm
from arena.models import Constitution
from arena.roles import researcher_required


@researcher_required
def constitution_list(request: HttpRequest) -> HttpResponse:
    default_constitution()
    constitutions = list(constitutions_with_usage())
    latest = latest_version_numbers()
    return render(request, "arena/constitution_list.html", {"constitutions": constitutions, "latest": latest})


@researcher_required
def constitution_detail(request: HttpRequest, constitution_id: int) -> HttpResponse:
    constitution = get_object_or_404(Constitution, pk=constitution_id)
    debates = constitution.debates.select_related("question").order_by("-created_at")
    page = Paginator(debates, 50).get_page(request.GET.get("page"))
    versions = Constitution.objects.filter(name=constitution.name).order_by("-version")
    previous = versions.filter(version__lt=constitution.version).first()
    return render(
        request,
        "arena/constitution_detail.html",
        {
            "constitution": constitution,
            "page": page,
            "used": page.paginator.count > 0,
            "versions": versions,
            "previous": previous,
            "rules_json": rules_as_json(constitution),
        },
    )


@researcher_required
def constitution_edit(request: HttpRequest, constitution_id: int) -> HttpResponse:
    base = get_object_or_404(Constitution, pk=constitution_id)
    error = ""
    if request.method == "POST":
        form = ConstitutionForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                created = new_version(
                    base,
                    name=data["name"],
                    preamble=data["preamble"],
                    principles=data["principles"],
                    rules=data["rules"],
                    created_by=request.user,
                )
            except ConstitutionError as exc:
                error = str(exc)
            else:
                return HttpResponseRedirect(reverse("constitution_detail", args=[created.pk]))
    else:
        form = ConstitutionForm(
            initial={
                "name": base.name,
                "preamble": base.preamble,
                "principles": principles_as_text(base),
                "rules": rules_as_json(base),
            }
        )
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "arena/constitution_edit.html",
        {"base": base, "form": form, "error": error, "used": base.is_used()},
        status=status,
    )


@researcher_required
def constitution_diff(request: HttpRequest) -> HttpResponse:
    constitutions = Constitution.objects.order_by("name", "-version")
    a_id, b_id = request.GET.get("a", ""), request.GET.get("b", "")
    context: dict[str, object] = {"constitutions": constitutions, "a_id": a_id, "b_id": b_id}
    if not a_id and not b_id:
        return render(request, "arena/constitution_diff.html", context)
    if not (a_id.isdigit() and b_id.isdigit()):
        context["error"] = "choose two versions to compare"
        return render(request, "arena/constitution_diff.html", context, status=400)
    a = get_object_or_404(Constitution, pk=int(a_id))
    b = get_object_or_404(Constitution, pk=int(b_id))
    lines = diff(a, b)
    context.update({"a": a, "b": b, "lines": lines, "changed": any(line.kind in ("add", "del") for line in lines)})
    return render(request, "arena/constitution_diff.html", context)
