"""Researcher pages of ratings, accuracy, calibration and bias, with plots and CSV/JSON downloads.

Every number comes from :mod:`judging.analysis` on stored verdicts. A report is cached for a
minute per filter, keyed also on the newest verdict and the verdict count, so new verdicts show at
once while the plots of one page (several requests) share one computation.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from pathlib import Path

from django.core.cache import cache
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from arena.engine.protocol import PROTOCOLS
from arena.models import Tournament
from arena.roles import researcher_required
from judging import analysis, nyu, plots
from judging.analysis import FilterError, Report, VerdictFilter, VerdictRow
from judging.models import Verdict

MAX_ROUNDS = 1000
PLOTS = ("ratings", "roles", "protocols", "judges", "accuracy-vs-rating", "reliability", "conditions")


class _BadRequest(Exception):
    pass


def _params(request: HttpRequest) -> tuple[VerdictFilter, int]:
    try:
        flt = VerdictFilter.from_params(request.GET)
    except FilterError as exc:
        raise _BadRequest(str(exc)) from None
    raw = request.GET.get("rounds", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ROUNDS:
        raise _BadRequest(f"rounds must be a whole number between 1 and {MAX_ROUNDS}")
    return flt, int(raw)


def _report(flt: VerdictFilter, rounds: int) -> tuple[Report, list[VerdictRow]]:
    state = Verdict.objects.aggregate(n=Count("pk"), last=Max("pk"))
    key = "analysis:" + hashlib.sha256(
        json.dumps([flt.as_params(), rounds, state["n"], state["last"]], sort_keys=True).encode()
    ).hexdigest()
    cached = cache.get(key)
    if cached is not None:
        return cached
    rows = analysis.load_rows(flt)
    result = (analysis.build_report(flt, rounds=rounds, rows=rows), rows)
    cache.set(key, result, 60)
    return result


def _bad(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "judging/analysis_error.html", {"message": message}, status=400)


def _choices() -> dict[str, object]:
    return {
        "tournaments": Tournament.objects.order_by("-created_at").values_list("pk", "name")[:200],
        "protocols": sorted(set(PROTOCOLS) | set(Verdict.objects.values_list("debate__protocol", flat=True).distinct())),
        "origins": sorted(set(Verdict.objects.values_list("origin", flat=True).distinct())),
        "judges": sorted(set(Verdict.objects.exclude(judge_label="").values_list("judge_label", flat=True).distinct()))[:200],
    }


@require_GET
@researcher_required
def analysis_page(request: HttpRequest) -> HttpResponse:
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return _bad(request, str(exc))
    report, _rows = _report(flt, rounds)
    query = request.GET.urlencode()
    return render(
        request,
        "judging/analysis.html",
        {
            "report": report,
            "flt": flt,
            "rounds": rounds,
            "query": query,
            "tables": ("ratings", "role_ratings", "accuracy_protocol", "accuracy_judge", "accuracy_condition", "accuracy_vs_rating", "reliability", "verdicts"),
            **_choices(),
        },
    )


@require_GET
@researcher_required
def analysis_plot(request: HttpRequest, name: str) -> HttpResponse:
    if name not in PLOTS:
        return HttpResponse("unknown plot", status=404, content_type="text/plain")
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    report, _rows = _report(flt, rounds)
    if name == "ratings":
        svg = plots.ratings_plot(report.debater_ratings)
    elif name == "roles":
        svg = plots.ratings_plot(report.role_ratings, "Arguing the right vs the wrong answer (Elo, 95% intervals)")
    elif name == "protocols":
        svg = plots.accuracy_plot(report.accuracy_by_protocol, "Judge accuracy per protocol")
    elif name == "judges":
        svg = plots.accuracy_plot(report.accuracy_by_judge, "Accuracy per judge")
    elif name == "accuracy-vs-rating":
        svg = plots.accuracy_vs_rating_plot(report.accuracy_vs_rating)
    elif name == "reliability":
        svg = plots.reliability_plot(report.calibration)
    else:
        svg = plots.accuracy_plot(report.accuracy_by_condition, "Judge accuracy per NYU condition", nyu.PAPER_ACCURACY)
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=60"
    return response


@require_GET
@researcher_required
def analysis_json(request: HttpRequest) -> HttpResponse:
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    report, _rows = _report(flt, rounds)
    response = JsonResponse(report.as_dict(), json_dumps_params={"indent": 1})
    response["Content-Disposition"] = 'attachment; filename="analysis.json"'
    return response


@require_GET
@researcher_required
def analysis_csv(request: HttpRequest, table: str) -> HttpResponse:
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    report, rows = _report(flt, rounds)
    tables = analysis.csv_tables(report, rows)
    if table not in tables:
        return HttpResponse("unknown table", status=404, content_type="text/plain")
    header, body = tables[table]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for line in body:
        # A cell that a spreadsheet would run as a formula is written as text (names come from users).
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in line])
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{table}.csv"'
    return response


@functools.lru_cache(maxsize=8)
def _release_reference(path: str, mtime: float, paper: bool | None) -> dict[str, tuple[int, int]]:
    return nyu.release_accuracy(Path(path), included_in_paper=paper)


@require_GET
@researcher_required
def nyu_page(request: HttpRequest) -> HttpResponse:
    """Accuracy per condition of the imported NYU verdicts, next to the whole release's figures."""
    try:
        base = VerdictFilter.from_params(request.GET)
    except FilterError as exc:
        return _bad(request, str(exc))
    flt = VerdictFilter(origin=nyu.ORIGIN, role=base.role, included_in_paper=base.included_in_paper)
    rows = analysis.load_rows(flt)
    conditions = analysis.accuracy_by_condition(rows)
    metadata = nyu.SAMPLE_DIR / nyu.METADATA
    reference: list[dict[str, object]] = []
    if metadata.is_file():
        counts = _release_reference(str(nyu.SAMPLE_DIR), metadata.stat().st_mtime, base.included_in_paper)
        for condition in nyu.CONDITIONS:
            correct, n = counts.get(condition, (0, 0))
            if n:
                reference.append(
                    {"condition": condition, "n": n, "accuracy": correct / n, "paper": nyu.PAPER_ACCURACY.get(condition)}
                )
    imported = Verdict.objects.filter(origin=nyu.ORIGIN).values("debate_id").distinct().count()
    return render(
        request,
        "judging/analysis_nyu.html",
        {
            "flt": flt,
            "rows": rows,
            "conditions": conditions,
            "judges": analysis.accuracy_by_judge(rows),
            "calibration": analysis.calibration(rows),
            "reference": reference,
            "imported_debates": imported,
            "query": flt.as_params(),
            "query_string": "&".join(f"{k}={v}" for k, v in flt.as_params().items()),
            "paper": nyu.PAPER_ACCURACY,
        },
    )
