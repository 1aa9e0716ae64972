"""Question set pages for researchers: the sets, upload a JSONL file, browse and search one set, one question.

An upload goes through :func:`arena.question_sets.import_upload` (the ``import_questions``
command's own import), so a bad file is refused with every bad line's number and nothing imported.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from arena.importing import ImportFailed
from arena.models import Question, QuestionSet
from arena.question_sets import import_upload, search_questions, sets_with_counts
from arena.roles import researcher_required


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text=(
            "JSONL, one question a line: id, question, answers[2], correct_index, source{title,text,origin}, "
            "license."
        )
    )
    set_name = forms.CharField(
        max_length=200,
        required=False,
        help_text="Empty: the file's name. An existing set is updated (questions matched by id).",
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


@researcher_required
def question_sets(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None, request.FILES or None)
    problems: list[tuple[int, str]] = []
    error = ""
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        name = form.cleaned_data["set_name"].strip() or upload.name.rsplit(".", 1)[0]
        try:
            result = import_upload(upload, name, form.cleaned_data["description"])
        except ImportFailed as exc:
            problems = exc.problems
            error = str(exc) if not problems else f"{len(problems)} bad line(s) in {upload.name}; nothing was imported."
        else:
            messages.success(
                request,
                f"{upload.name}: {result.created} question(s) created, {result.updated} updated, "
                f"{result.unchanged} unchanged",
            )
            return HttpResponseRedirect(reverse("question_set", args=[result.question_set.pk]))
    status = 400 if request.method == "POST" else 200
    context = {"sets": sets_with_counts(), "form": form, "problems": problems, "error": error}
    return render(request, "arena/question_sets.html", context, status=status)


@researcher_required
def question_set(request: HttpRequest, set_id: int) -> HttpResponse:
    qset = get_object_or_404(QuestionSet, pk=set_id)
    text = request.GET.get("q", "")
    debated = request.GET.get("debated") == "1"
    page = Paginator(search_questions(qset, text, debated), 50).get_page(request.GET.get("page"))
    context = {"qset": qset, "page": page, "q": text, "debated": debated}
    return render(request, "arena/question_set.html", context)


@researcher_required
def question_detail(request: HttpRequest, question_id: int) -> HttpResponse:
    question = get_object_or_404(Question.objects.select_related("question_set"), pk=question_id)
    debates = question.debates.select_related("debater_a", "debater_b").order_by("-created_at")
    page = Paginator(debates, 50).get_page(request.GET.get("page"))
    return render(request, "arena/question_detail.html", {"question": question, "page": page})
