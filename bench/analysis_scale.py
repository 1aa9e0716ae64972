"""Analysis page at scale: today's row path beside the SQL-sum path, on the same synthetic tournament.

Builds (or reuses) the export benchmark's synthetic tournament in the database ``DATABASE_URL``
points at (``bench/export.py``'s builder: AI verdicts on debates between two debaters), then runs
each measurement in a fresh process, so that its peak RSS is its own and "cold" means cold:

* ``rows``: today's path: every selected verdict loaded as a Python row (``load_rows``), then the
  report built from those rows;
* ``page cold``: the analysis page view in a new process with an empty cache: the verdicts summed
  in SQL into cells (``load_cells``), the bootstrap, the report, the HTML;
* ``page warm``: the same view again in that process: the cached report (the cache key holds the
  verdict count and newest id, so a new verdict makes a new report).

It prints wall seconds and peak RSS side by side, and whether the two paths' figures agree (every
number of the JSON report, relative tolerance 1e-9). Goal for 1,000,000 verdicts: page ≤ 10 s cold,
≤ 2 s warm, < 500 MB.

    createdb -h 127.0.0.1 -U postgres arena_bench
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/arena_bench
    python manage.py migrate
    python bench/analysis_scale.py --verdicts 100000     # a first, smaller run
    python bench/analysis_scale.py --verdicts 1000000   # measured: rows 53 s, 1.86 GB; page 6–7.5 s cold,
                                                        # 0.3–0.9 s warm, 136 MB (2 cores, load ~10)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

from bench import export as export_bench  # noqa: E402 - after the path and settings above


def _phase_rows(tournament: int, rounds: int) -> dict[str, object]:
    import django

    django.setup()
    from judging import analysis

    baseline = export_bench._peak_rss_mb()
    flt = analysis.VerdictFilter(tournament=tournament)
    started = time.perf_counter()
    rows = analysis.load_rows(flt)
    loaded = time.perf_counter() - started
    report = analysis.build_report(flt, rounds=rounds, rows=rows)
    seconds = time.perf_counter() - started
    return {"path": "rows (today)", "seconds": round(seconds, 2), "load_s": round(loaded, 2),
            "peak_rss_mb": round(export_bench._peak_rss_mb()), "baseline_rss_mb": round(baseline), "report": report.as_dict()}


def _phase_page(tournament: int, rounds: int) -> dict[str, object]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    from judging import analysis
    from judging.views_analysis import analysis_page, cached_report

    user, _ = get_user_model().objects.get_or_create(username="bench-analysis", defaults={"is_superuser": True, "is_staff": True})
    baseline = export_bench._peak_rss_mb()
    params = {"tournament": str(tournament), "rounds": str(rounds)}
    times = []
    for _ in range(2):
        request = RequestFactory().get("/analysis/", params)
        request.user = user
        started = time.perf_counter()
        response = analysis_page(request)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    started = time.perf_counter()
    cells = analysis.load_cells(analysis.VerdictFilter(tournament=tournament))
    sql_s = time.perf_counter() - started
    report = cached_report(analysis.VerdictFilter(tournament=tournament), rounds)
    return {"path": "SQL sums + cache", "cold_s": round(times[0], 2), "warm_s": round(times[1], 3), "sql_s": round(sql_s, 2),
            "cells": len(cells), "peak_rss_mb": round(export_bench._peak_rss_mb()), "baseline_rss_mb": round(baseline),
            "report": report.as_dict()}


def _run(phase: str, tournament: int, rounds: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--tournament", str(tournament), "--rounds", str(rounds)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _differences(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys differ"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verdicts", type=int, default=1_000_000, help="AI verdicts in the tournament (default 1,000,000)")
    parser.add_argument("--judges", type=int, default=4, help="AI verdicts per debate (default 4)")
    parser.add_argument("--rounds", type=int, default=100, help="bootstrap rounds, as the page's default (default 100)")
    parser.add_argument("--skip-rows", action="store_true", help="do not time today's row path (slow and large at 1M)")
    parser.add_argument("--phase", choices=["rows", "page"], help=argparse.SUPPRESS)
    parser.add_argument("--tournament", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = (_phase_rows if args.phase == "rows" else _phase_page)(args.tournament, args.rounds)
        print(json.dumps(result))
        return 0
    if args.verdicts < 1 or args.judges < 1 or args.rounds < 1:
        parser.error("--verdicts, --judges and --rounds must be positive")

    print(f"database: {os.environ.get('DATABASE_URL', '(SQLite in ARENA_DATA_DIR)').split('@')[-1]}")
    # Short speeches: the analysis never reads them, and generating them is most of the build time.
    config = {"verdicts": args.verdicts, "judges": args.judges, "rounds": 1, "questions": 500, "words": 5}
    tournament = export_bench.existing(config)
    if tournament is None:
        started = time.perf_counter()
        export_bench.generate(args.verdicts, args.judges, 1, 500, 5, 5000)
        print(f"generated {args.verdicts:,} verdicts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        tournament = export_bench.existing(config)
    assert tournament is not None

    page = _run("page", tournament, args.rounds)
    rows = None if args.skip_rows else _run("rows", tournament, args.rounds)
    print(f"\n{args.verdicts:,} verdicts, tournament {tournament}, {args.rounds} bootstrap rounds, {page['cells']} cells")
    print(f"{'path':<28}{'cold s':>10}{'warm s':>10}{'peak RSS MB':>14}")
    if rows is not None:
        print(f"{'rows (today)':<28}{rows['seconds']:>10}{'–':>10}{rows['peak_rss_mb']:>14}   (loading rows: {rows['load_s']} s)")
    print(f"{'SQL sums + cache (page)':<28}{page['cold_s']:>10}{page['warm_s']:>10}{page['peak_rss_mb']:>14}   (the SQL sums alone: {page['sql_s']} s)")
    if rows is not None:
        diff = _differences(rows["report"], page["report"])
        print("same figures on both paths" if not diff else f"{len(diff)} figures differ, e.g. {diff[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
