""""Next debate" under a crowd of judges: claims per second and latency of the study scheduler, with
the same work claimed under a study-wide lock (the baseline) and with per-slot ``SKIP LOCKED``
claims (the real path, ``judging.studies.next_debate``), side by side in one run.

Builds a study of ``--debates`` finished debates (each on its own question and story) needing
``--verdicts`` verdicts each, and ``--judges`` judges; then ``--threads`` threads, each with its own
database connection, take judges in turn and click "Next debate" until nobody can be given anything,
giving a verdict right after each claim. Afterwards it checks that every slot was handed exactly
once and no judge broke an exposure rule. Run it against PostgreSQL, in a database of its own::

    createdb -h 127.0.0.1 -U postgres arena_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/arena_bench python bench/judge_scheduler.py
    ... --debates 400 --verdicts 3 --judges 80 --threads 16

Prints per path: claims, wall time, claims/s, claim latency p50/p95, and the checks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from arena.constitution import default_constitution  # noqa: E402
from arena.models import Debate, Question, QuestionSet  # noqa: E402
from debaters.profiles import default_profile  # noqa: E402
from judging import studies  # noqa: E402
from judging.models import Assignment, Study, StudySlot, Verdict  # noqa: E402
from judging.studies import Claim  # noqa: E402

TAG = "bench-scheduler"


def _setup(n_debates: int, n_judges: int) -> tuple[list[int], list[object]]:
    """Reuse the bench's debates and judges (created once), wipe the studies and verdicts."""
    Study.objects.filter(name__startswith=TAG).delete()
    qset, _ = QuestionSet.objects.get_or_create(name=TAG)
    have = Question.objects.filter(question_set=qset).count()
    Question.objects.bulk_create(
        Question(
            question_set=qset, external_id=f"b{i}", question=f"Question {i}?", answers=["yes", "no"],
            correct_index=i % 2, source_title=f"Bench story {i}", source_text=f"Bench story {i}.",
        )
        for i in range(have, n_debates)
    )
    questions = list(Question.objects.filter(question_set=qset).order_by("pk")[:n_debates])
    debates = list(Debate.objects.filter(question__question_set=qset, tournament_key=TAG).order_by("pk"))
    profile, constitution = default_profile(), default_constitution()
    missing = questions[len(debates):]
    Debate.objects.bulk_create(
        Debate(question=q, protocol="debate", settings={"rounds": 1}, constitution=constitution, debater_a=profile,
               debater_b=profile, seed=1, status=Debate.Status.FINISHED, tournament_key=TAG)
        for q in missing
    )
    ids = list(Debate.objects.filter(question__question_set=qset, tournament_key=TAG).order_by("pk").values_list("pk", flat=True))[:n_debates]
    Verdict.objects.filter(debate_id__in=ids).delete()
    Assignment.objects.filter(debate_id__in=ids).delete()
    users = get_user_model()
    judges = []
    for i in range(n_judges):
        user, _ = users.objects.get_or_create(username=f"{TAG}-judge-{i}")
        judges.append(user)
    return ids, judges


def _baseline(study: Study, judge: object) -> Claim:
    """The same claim with every judge of the study queued behind one lock (the study row)."""
    with transaction.atomic():
        Study.objects.select_for_update().get(pk=study.pk)
        return studies.next_debate(study, judge)  # type: ignore[arg-type]


def _real(study: Study, judge: object) -> Claim:
    return studies.next_debate(study, judge)  # type: ignore[arg-type]


def _run(name: str, claim: Callable[[Study, object], Claim], ids: list[int], judges: list[object], verdicts: int,
         threads: int) -> dict[str, object]:
    study = studies.create_study(
        name=f"{TAG}-{name}", debates=list(Debate.objects.filter(pk__in=ids)), verdicts_per_debate=verdicts
    )
    Verdict.objects.filter(debate_id__in=ids).delete()
    Assignment.objects.filter(debate_id__in=ids).delete()
    latencies: list[float] = []
    lock = threading.Lock()
    pending = list(judges)

    def worker() -> None:
        try:
            while True:
                with lock:
                    if not pending:
                        return
                    judge = pending.pop(0)
                started = time.perf_counter()
                result = claim(study, judge)
                elapsed = time.perf_counter() - started
                if result.assignment is None:
                    continue  # this judge can be given nothing more: leaves the crowd
                a = result.assignment
                Verdict.objects.create(
                    debate_id=a.debate_id, judge=judge, shown_first=a.shown_first, p_a=0.7, p_b=0.3, reason="bench",
                    correct=True,
                )
                with lock:
                    latencies.append(elapsed)
                    pending.append(judge)
        finally:
            connection.close()

    began = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - began
    studies.settle(study)
    slots = StudySlot.objects.filter(entry__study=study)
    handed_once = all(s.handed_out == 1 for s in slots) and slots.filter(verdict__isnull=True).count() == 0
    flags = studies.exposure_flags(Verdict.objects.filter(debate_id__in=ids))
    latencies.sort()
    return {
        "path": name,
        "claims": len(latencies),
        "slots": slots.count(),
        "wall_s": wall,
        "claims_per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0,
        "every_slot_once": handed_once,
        "rule_breaks": len(flags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debates", type=int, default=200, help="debates in the study (default 200)")
    parser.add_argument("--verdicts", type=int, default=2, help="verdicts each debate needs (default 2)")
    parser.add_argument("--judges", type=int, default=40, help="judges clicking Next (default 40)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clicks, one connection each (default 8)")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("run this against PostgreSQL (DATABASE_URL=postgres://...): SQLite has no row locks")
    call_command("migrate", verbosity=0)
    ids, judges = _setup(args.debates, args.judges)
    print(f"{args.debates} debates × {args.verdicts} verdicts = {args.debates * args.verdicts} slots, "
          f"{args.judges} judges, {args.threads} threads; load average {os.getloadavg()[0]:.1f}")
    rows = [_run(name, fn, ids, judges, args.verdicts, args.threads) for name, fn in (("study-lock", _baseline), ("skip-locked", _real))]
    print(f"{'path':12} {'claims':>7} {'wall s':>8} {'claims/s':>9} {'p50 ms':>8} {'p95 ms':>8}  every slot once  rule breaks")
    for r in rows:
        print(f"{r['path']:12} {r['claims']:>7} {r['wall_s']:>8.2f} {r['claims_per_s']:>9.1f} {r['p50_ms']:>8.1f} "
              f"{r['p95_ms']:>8.1f}  {str(r['every_slot_once']):15}  {r['rule_breaks']}")
    Study.objects.filter(name__startswith=TAG).delete()


if __name__ == "__main__":
    main()
