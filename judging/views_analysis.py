"""Researcher pages of ratings, accuracy, calibration and bias, with plots and CSV/JSON downloads.

Every number comes from :mod:`judging.analysis` on stored verdicts, through the same functions for
the page, the plots and the CSV/JSON downloads. A report is cached per filter and bootstrap rounds,
keyed also on the newest verdict and the verdict count, so new verdicts show at once (a new key)
while the plots of one page and later visits share one computation.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from django.core.cache import cache
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from arena.engine.protocol import PROTOCOLS
from arena.models import Debate, Tournament
from arena.roles import researcher_required
from judging import analysis, nyu, plots
from judging.analysis import FilterError, Report, VerdictFilter
from judging.models import Verdict
from judging.quality import deactivated_judges
from judging.studies import exposure_flags

MAX_ROUNDS = 1000
CACHE_S = 24 * 3600
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


def selection_state() -> tuple[int, int | None]:
    """(count, newest pk) of every verdict: changes whenever a verdict arrives, goes or is replaced."""
    state = Verdict.objects.aggregate(n=Count("pk"), last=Max("pk"))
    return int(state["n"]), state["last"]


def cached_report(flt: VerdictFilter, rounds: int) -> Report:
    """The report of a selection, cached until a verdict arrives, goes or is replaced (the key holds
    the verdict count and newest id), for at most :data:`CACHE_S`. Only the report is cached (a few
    KB), never the verdicts: the report is built from cells summed in the database."""
    key = "analysis:" + hashlib.sha256(
        json.dumps([flt.as_params(), rounds, *selection_state()], sort_keys=True).encode()
    ).hexdigest()
    cached = cache.get(key)
    if cached is not None:
        return cached
    report = analysis.build_report(flt, rounds=rounds)
    cache.set(key, report, CACHE_S)
    return report


def download_name(flt: VerdictFilter, name: str, ext: str) -> str:
    """``analysis-t12-ai.json``, ``ratings-all.csv``: the selection is part of every file name."""
    return f"{name}-{flt.slug()}.{ext}"


def debates_link(flt: VerdictFilter) -> Callable[..., str]:
    """URL builder of the debate list narrowed to the selection and to one point of a plot
    (``arena.views.filter_debates`` reads the same keys)."""
    base = {k: v for k, v in flt.as_params().items() if k in ("tournament", "protocol")}
    if flt.judge:
        base["judge"] = flt.judge

    def link(**extra: str) -> str:
        return reverse("debates") + "?" + urlencode({**base, **{k: v for k, v in extra.items() if v}})

    return link


def _bad(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "judging/analysis_error.html", {"message": message}, status=400)


def _choices() -> dict[str, object]:
    """The filter form's options. The distinct values read every verdict, so they are cached
    like the report: until a verdict arrives, goes or is replaced."""
    key = "analysis-choices:" + ":".join(str(x) for x in selection_state())
    cached = cache.get(key)
    if cached is None:
        # order_by() first: the model's default ordering would make DISTINCT return every verdict.
        cached = {
            "protocols": sorted(set(PROTOCOLS) | set(Debate.objects.order_by().values_list("protocol", flat=True).distinct())),
            "origins": sorted(set(Verdict.objects.order_by().values_list("origin", flat=True).distinct())),
            "judges": sorted(set(Verdict.objects.exclude(judge_label="").order_by().values_list("judge_label", flat=True).distinct()))[:200],
        }
        cache.set(key, cached, CACHE_S)
    return {**cached, "tournaments": Tournament.objects.order_by("-created_at").values_list("pk", "name")[:200]}


@require_GET
@researcher_required
def analysis_page(request: HttpRequest) -> HttpResponse:
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return _bad(request, str(exc))
    report = cached_report(flt, rounds)
    query = request.GET.urlencode()
    return render(
        request,
        "judging/analysis.html",
        {
            "report": report,
            "flt": flt,
            "rounds": rounds,
            "query": query,
            "downloads": [(t, download_name(flt, t, "csv")) for t in analysis.TABLES],
            "json_name": download_name(flt, "analysis", "json"),
            "position_bias_formula": analysis.POSITION_BIAS_FORMULA,
            "exposure_flagged": len(exposure_flags()),
            "deactivated_verdicts": Verdict.objects.filter(
                kind=Verdict.Kind.HUMAN, judge_id__in=deactivated_judges()
            ).count(),
            **_choices(),
        },
    )


def _summary(tournament: Tournament, rounds: int) -> dict[str, object]:
    report = cached_report(VerdictFilter(tournament=tournament.pk), rounds)
    return {
        "tournament": tournament,
        "report": report,
        "ai_bias": [j for j in report.biases.position_by_judge if j.kind == Verdict.Kind.AI],
        "query": f"tournament={tournament.pk}&rounds={rounds}",
        "position_bias_formula": analysis.POSITION_BIAS_FORMULA,
    }


@require_GET
@researcher_required
def tournament_summary(request: HttpRequest, tournament_id: int) -> HttpResponse:
    """The results of one tournament on one page: ratings with intervals, judge accuracy per
    protocol, the AI judges' position bias, who judged how many debates (the page for a paper)."""
    tournament = get_object_or_404(Tournament, pk=tournament_id)
    return render(request, "judging/tournament_summary.html", {**_summary(tournament, 100), "rounds": 100,
                                                               "tournaments": Tournament.objects.order_by("-created_at").values_list("pk", "name")[:200]})


@require_GET
@researcher_required
def compare_tournaments(request: HttpRequest) -> HttpResponse:
    """Two tournaments side by side: ratings and judge accuracy with intervals, from the same reports."""
    ids = [request.GET.get(k, "").strip() for k in ("a", "b")]
    if not all(i.isdigit() for i in ids):
        return _bad(request, "compare needs two tournament ids, a and b")
    left, right = (get_object_or_404(Tournament, pk=int(i)) for i in ids)
    a, b = _summary(left, 100), _summary(right, 100)
    names = sorted({r.name for r in a["report"].debater_ratings.ratings} | {r.name for r in b["report"].debater_ratings.ratings})  # type: ignore[attr-defined]
    ra, rb = a["report"].debater_ratings.by_name(), b["report"].debater_ratings.by_name()  # type: ignore[attr-defined]
    protocols = sorted({x.key for x in a["report"].accuracy_by_protocol} | {x.key for x in b["report"].accuracy_by_protocol})  # type: ignore[attr-defined]
    pa = {x.key: x for x in a["report"].accuracy_by_protocol}  # type: ignore[attr-defined]
    pb = {x.key: x for x in b["report"].accuracy_by_protocol}  # type: ignore[attr-defined]
    return render(request, "judging/compare.html", {
        "a": a, "b": b,
        "ratings": [(n, ra.get(n), rb.get(n)) for n in names],
        "accuracy": [(p, pa.get(p), pb.get(p)) for p in protocols],
    })


@require_GET
@researcher_required
@xframe_options_sameorigin  # shown in an <object> of our own pages, so its hover titles and links work
def analysis_plot(request: HttpRequest, name: str) -> HttpResponse:
    if name not in PLOTS:
        return HttpResponse("unknown plot", status=404, content_type="text/plain")
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    report = cached_report(flt, rounds)
    debates = debates_link(flt)
    if name == "ratings":
        svg = plots.ratings_plot(report.debater_ratings, link=lambda n: debates(debater=n))
    elif name == "roles":
        svg = plots.ratings_plot(
            report.role_ratings, "Arguing the right vs the wrong answer (Elo, 95% intervals)",
            link=lambda n: debates(debater=n.rsplit(" (", 1)[0]),
        )
    elif name == "protocols":
        svg = plots.accuracy_plot(report.accuracy_by_protocol, "Judge accuracy per protocol", link=lambda p: debates(protocol=p))
    elif name == "judges":
        labels = {f"{r.judge} ({r.kind})": r.judge for r in report.judge_load}
        svg = plots.accuracy_plot(report.accuracy_by_judge, "Accuracy per judge", link=lambda k: debates(judge=labels.get(k, "")))
    elif name == "accuracy-vs-rating":
        svg = plots.accuracy_vs_rating_plot(report.accuracy_vs_rating, link=lambda p: debates(protocol=p.protocol, debater=p.debater))
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
    response = JsonResponse(cached_report(flt, rounds).as_dict(), json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="{download_name(flt, "analysis", "json")}"'
    return response


@require_GET
@researcher_required
def analysis_csv(request: HttpRequest, table: str) -> HttpResponse:
    try:
        flt, rounds = _params(request)
    except _BadRequest as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    if table not in analysis.TABLES:
        return HttpResponse("unknown table", status=404, content_type="text/plain")
    if table == "verdicts":
        header, body = analysis.verdict_table(analysis.load_rows(flt))
    else:
        header, body = analysis.report_tables(cached_report(flt, rounds))[table]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for line in body:
        # A cell that a spreadsheet would run as a formula is written as text (names come from users).
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in line])
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{download_name(flt, table, "csv")}"'
    return response


@functools.lru_cache(maxsize=8)
def _release_reference(path: str, mtime: float, paper: bool | None) -> dict[str, tuple[int, int]]:
    return nyu.release_accuracy(Path(path), included_in_paper=paper)


def release_reference() -> list[dict[str, object]]:
    """Per condition, the whole release's live-judge accuracy in the paper's rooms (beside the
    paper's figure) and in the other rooms, separately."""
    metadata = nyu.SAMPLE_DIR / nyu.METADATA
    if not metadata.is_file():
        return []
    mtime = metadata.stat().st_mtime
    paper = _release_reference(str(nyu.SAMPLE_DIR), mtime, True)
    rest = _release_reference(str(nyu.SAMPLE_DIR), mtime, False)
    out: list[dict[str, object]] = []
    for condition in nyu.CONDITIONS:
        (pc, pn), (rc, rn) = paper.get(condition, (0, 0)), rest.get(condition, (0, 0))
        if pn or rn:
            out.append({
                "condition": condition,
                "paper_n": pn, "paper_accuracy": pc / pn if pn else None,
                "paper": nyu.PAPER_ACCURACY.get(condition),
                "rest_n": rn, "rest_accuracy": rc / rn if rn else None,
            })
    return out


@require_GET
@researcher_required
def nyu_page(request: HttpRequest) -> HttpResponse:
    """Accuracy per condition of the imported NYU verdicts, the paper's rooms beside the paper's
    figures and the other rooms apart, next to the whole release's figures."""
    try:
        base = VerdictFilter.from_params(request.GET)
    except FilterError as exc:
        return _bad(request, str(exc))
    flt = VerdictFilter(origin=nyu.ORIGIN, role=base.role, included_in_paper=base.included_in_paper)
    cells = analysis.load_cells(flt)
    paper_cells = [c for c in cells if c.included_in_paper is True]
    rest_cells = [c for c in cells if c.included_in_paper is not True]
    imported = Verdict.objects.filter(origin=nyu.ORIGIN).values("debate_id").distinct().count()
    return render(
        request,
        "judging/analysis_nyu.html",
        {
            "flt": flt,
            "paper_conditions": [
                (row, nyu.PAPER_ACCURACY.get(row.key)) for row in analysis.accuracy_by_condition(paper_cells)
            ],
            "rest_conditions": analysis.accuracy_by_condition(rest_cells),
            "judges": analysis.accuracy_by_judge(cells),
            "calibration": analysis.calibration(cells),
            "reference": release_reference(),
            "imported_debates": imported,
            "query": flt.as_params(),
            "query_string": "&".join(f"{k}={v}" for k, v in flt.as_params().items()),
            "paper": nyu.PAPER_ACCURACY,
        },
    )
