"""The researcher's export page: the list of exports, a form to start one, its live progress and
the downloads. Researchers only; the work runs in Celery (``judging.tasks.export_task``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time

from django import forms
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods
from markdown_it import MarkdownIt

from arena.models import Tournament
from arena.roles import researcher_required
from judging.exports import (
    FILE_FORMATS,
    FORMAT_HELP,
    FORMATS,
    JUDGES,
    KIND_HELP,
    KINDS,
    ExportError,
    ExportRequest,
    export_file,
    start_export,
)
from judging.models import Export

PAGE = 50


class ExportForm(forms.Form):
    kind = forms.ChoiceField(choices=[(k, f"{k}: {KIND_HELP[k]}") for k in KINDS], initial="arguments")
    format = forms.ChoiceField(choices=[(f, f"{f}: {FORMAT_HELP[f]}") for f in FORMATS], initial="conversational")
    file_format = forms.ChoiceField(choices=[(f, f) for f in FILE_FORMATS], initial="jsonl", label="File type")
    judge = forms.ChoiceField(choices=[(j, j) for j in JUDGES], initial="any", label="Judges")
    min_margin = forms.FloatField(required=False, min_value=0.0, max_value=1.0, label="Minimum margin")
    min_agreement = forms.FloatField(required=False, min_value=0.0, max_value=1.0, label="Minimum agreement")
    constitution = forms.CharField(required=False, max_length=120, help_text="NAME or NAME@VERSION")
    since = forms.DateField(required=False, help_text="YYYY-MM-DD", widget=forms.DateInput(attrs={"type": "date"}))
    tournament = forms.ModelChoiceField(queryset=Tournament.objects.order_by("-created_at"), required=False)
    correct_only = forms.BooleanField(required=False, label="Correct only")
    per_verdict = forms.BooleanField(required=False, label="One row per verdict (arguments)")
    all_pairs = forms.BooleanField(required=False, label="All candidate pairs (turns)")
    test_fraction = forms.FloatField(
        required=False, initial=0.1, min_value=0.0, max_value=0.99, label="Test fraction",
        help_text="share of stories in the test split (splits are by story; empty: 0.1)",
    )
    datasets = forms.BooleanField(
        required=False, label="Also a datasets folder (train/test splits, zip)",
        help_text="what the command's --hf writes: a Hugging Face save_to_disk folder",
    )
    stable_judge_ids = forms.BooleanField(required=False, label="Stable judge ids (keyed by ARENA_EXPORT_KEY)")
    include_flagged = forms.BooleanField(
        required=False, label="Include flagged human verdicts", help_text="verdicts that break an exposure rule (docs/judging.md)"
    )
    include_deactivated = forms.BooleanField(
        required=False,
        label="Include deactivated judges",
        help_text="verdicts of judges a researcher deactivated, left out by default (docs/judging.md)",
    )

    def to_request(self) -> ExportRequest:
        data = self.cleaned_data
        since = data.get("since")
        tournament = data.get("tournament")
        return ExportRequest(
            kind=data["kind"],
            format=data["format"],
            file_format=data["file_format"],
            judge=data["judge"],
            min_margin=data.get("min_margin"),
            min_agreement=data.get("min_agreement"),
            constitution=data.get("constitution") or "",
            since=datetime.combine(since, time.min, tzinfo=UTC) if since else None,
            tournament=tournament.pk if tournament else None,
            correct_only=bool(data.get("correct_only")),
            per_verdict=bool(data.get("per_verdict")),
            all_pairs=bool(data.get("all_pairs")),
            test_fraction=0.1 if data.get("test_fraction") is None else data["test_fraction"],
            datasets=bool(data.get("datasets")),
            stable_judge_ids=bool(data.get("stable_judge_ids")),
            include_flagged=bool(data.get("include_flagged")),
            include_deactivated=bool(data.get("include_deactivated")),
        )


def _status(export: Export) -> dict[str, object]:
    finished = export.status == Export.Status.FINISHED
    return {
        "id": export.pk,
        "status": export.status,
        "progress": round(export.progress, 4),
        "rows": export.rows,
        "error": export.error,
        "download": reverse("export_download", args=[export.pk]) if finished else None,
        "card": reverse("export_card", args=[export.pk]) if finished else None,
        "card_page": reverse("export_card_page", args=[export.pk]) if finished else None,
        "datasets": reverse("export_datasets", args=[export.pk]) if finished and (export.filters or {}).get("datasets") else None,
    }


@researcher_required
@require_http_methods(["GET", "POST"])
def exports(request: HttpRequest) -> HttpResponse:
    form = ExportForm(request.POST or None)
    error = ""
    if request.method == "POST":
        if form.is_valid():
            try:
                start_export(form.to_request(), request.user)  # type: ignore[arg-type]
            except ExportError as exc:
                error = str(exc)
            else:
                return HttpResponseRedirect(reverse("exports"))
        else:
            error = "; ".join(f"{name}: {' '.join(errs)}" for name, errs in form.errors.items())
    rows = list(Export.objects.select_related("created_by").order_by("-created_at")[:PAGE])
    context = {
        "form": form,
        "error": error,
        "exports": rows,
        "running": [e.pk for e in rows if e.status in (Export.Status.QUEUED, Export.Status.RUNNING)],
    }
    return render(request, "judging/exports.html", context, status=400 if error else 200)


@researcher_required
@require_GET
def export_status(request: HttpRequest, export_id: int) -> JsonResponse:
    return JsonResponse(_status(get_object_or_404(Export, pk=export_id)))


class ChunkedFileResponse(FileResponse):
    """A file download that an ASGI server streams a block at a time.

    Why: under ASGI, Django serves a ``FileResponse`` by consuming its synchronous iterator with one
    ``sync_to_async(list)`` call, so the whole file (an export of a million verdicts: hundreds of
    megabytes) was read into the web process's memory before the first byte went out, on one of
    its few request threads (``ARENA_WEB_THREADS``). Here each block is read in a thread of the
    loop's executor and handed to the server before the next is read. Measured through Daphne with
    a 170 MB export: the web process grew by 110 MB during the download instead of 325 MB (Daphne
    applies no back-pressure to response bodies, so what the client has not taken yet is buffered
    there). Under WSGI (and Django's test client) it is an ordinary ``FileResponse``.
    """

    async_block_size = 1 << 20

    async def __aiter__(self) -> AsyncIterator[bytes]:
        handle = self.file_to_stream
        if handle is None:
            async for part in super().__aiter__():
                yield part
            return
        while True:
            block = await asyncio.to_thread(handle.read, self.async_block_size)
            if not block:
                return
            yield block


def _serve(export_id: int, which: str) -> ChunkedFileResponse:
    export = get_object_or_404(Export, pk=export_id)
    path = export_file(export, which)
    if path is None:
        raise Http404("this export has no file to download (not finished, or its files were removed)")
    if which == "card":
        return ChunkedFileResponse(
            path.open("rb"),
            as_attachment=True,
            filename=f"export-{export.pk}-README.md",
            content_type="text/markdown; charset=utf-8",
        )
    if which == "datasets":
        return ChunkedFileResponse(path.open("rb"), as_attachment=True, filename=f"export-{export.pk}-datasets.zip", content_type="application/zip")
    content_type = "application/x-ndjson" if path.suffix == ".jsonl" else "application/vnd.apache.parquet"
    return ChunkedFileResponse(
        path.open("rb"), as_attachment=True, filename=f"export-{export.pk}-{path.name}", content_type=content_type
    )


@researcher_required
@require_GET
def export_download(request: HttpRequest, export_id: int) -> FileResponse:
    return _serve(export_id, "data")


@researcher_required
@require_GET
def export_card(request: HttpRequest, export_id: int) -> FileResponse:
    return _serve(export_id, "card")


@researcher_required
@require_GET
def export_datasets(request: HttpRequest, export_id: int) -> FileResponse:
    return _serve(export_id, "datasets")


# The card is written by the export (counts, filters, provenance) and may quote researcher-typed
# names: raw HTML in it is shown as text, and markdown-it refuses javascript: links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


@researcher_required
@require_GET
def export_card_page(request: HttpRequest, export_id: int) -> HttpResponse:
    """The dataset card rendered as a page, with a link to download it as markdown."""
    export = get_object_or_404(Export, pk=export_id)
    path = export_file(export, "card")
    if path is None:
        raise Http404("this export has no card (not finished, or its files were removed)")
    html = _MARKDOWN.render(path.read_text(encoding="utf-8"))
    return render(request, "judging/export_card.html", {"export": export, "card_html": mark_safe(html)})  # noqa: S308 - escaped by markdown-it (html off)
