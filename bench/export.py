"""Export throughput and memory: N synthetic verdicts in the database, exported to Parquet.

Generates ``--verdicts`` verdict records (default 1,000,000) with their debates and speeches through
the ORM's bulk paths (``bulk_create``) into whatever ``DATABASE_URL`` points at, then times
``run_export`` writing them as TRL conversational pairs to Parquet, in a fresh process so that its
peak RSS is the export's own. Prints rows/s and peak RSS. Goal: 1M rows in ≤ 60 s, ≤ 1 GB.

Run it against PostgreSQL (SQLite works, but is not what a large deployment uses), in a database of
its own; the data is tagged with a tournament named ``bench-export`` and reused by later runs with
the same options (``--regenerate`` to rebuild, ``--clean`` to delete it)::

    createdb -h 127.0.0.1 -U postgres arena_bench
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/arena_bench
    python manage.py migrate
    python bench/export.py --verdicts 100000          # a first, smaller run
    python bench/export.py                            # 1M verdicts
    python bench/export.py --formats parquet,jsonl    # JSONL timed in the same run, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

TAG = "bench-export"
WORDS = (
    "the keeper rowed out at dawn and found the lamp shattered while the logbook was missing and nobody on "
    "the island had a key to the tower except the keeper himself and his sister who lived by the harbour"
).split()


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process, all threads: less sensitive than wall time to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _speech(i: int, side: int, rnd: int, words: int) -> str:
    # Every speech different, as real ones are: repeated text would flatter Parquet's compression.
    rng = random.Random(i * 16 + side * 8 + rnd)
    body = " ".join(rng.choices(WORDS, k=words))
    return f"Debater {side + 1}, round {rnd}: {body}. <quote>found the lamp shattered</quote>"


def generate(n_verdicts: int, judges: int, rounds: int, questions: int, words: int, batch: int) -> None:
    """Debates, speeches and verdicts via bulk_create, in batches; progress on stderr."""
    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone
    from tqdm import tqdm

    from arena.constitution import default_constitution
    from arena.models import Debate, Question, QuestionSet, Tournament, Turn
    from debaters.models import DebaterProfile
    from judging.models import JudgeProfile, Verdict

    n_debates = -(-n_verdicts // judges)
    qset, _ = QuestionSet.objects.get_or_create(name=TAG, defaults={"licence": "CC-BY-4.0", "origin": "synthetic"})
    have = set(qset.questions.values_list("external_id", flat=True))
    Question.objects.bulk_create(
        [
            Question(
                question_set=qset,
                external_id=f"bench-{k}",
                question=f"Who broke the lamp in story {k}?",
                answers=["The keeper", "His sister"],
                correct_index=k % 2,
                source_title=f"Story {k}",
                source_text=" ".join(WORDS),
                licence="CC-BY-4.0",
            )  # fmt: skip
            for k in range(questions)
            if f"bench-{k}" not in have
        ]
    )
    gold = dict(qset.questions.order_by("pk").values_list("pk", "correct_index")[:questions])
    question_ids = list(gold)
    constitution = default_constitution()
    a, _ = DebaterProfile.objects.get_or_create(
        name="bench-a", defaults={"backend": "transformers", "model": "embedded"}
    )
    b, _ = DebaterProfile.objects.get_or_create(name="bench-b", defaults={"backend": "openai", "model": "bench-model"})
    ai_judges = [
        JudgeProfile.objects.get_or_create(name=f"bench-judge-{j}", defaults={"backend": "transformers"})[0]
        for j in range(judges)
    ]
    config = {"verdicts": n_verdicts, "judges": judges, "rounds": rounds, "questions": questions, "words": words}
    tournament = Tournament.objects.create(name=TAG, config=config)
    now = timezone.now()
    bar = tqdm(total=n_verdicts, unit="verdict", desc="generate", file=sys.stderr)
    made = 0
    for start in range(0, n_debates, batch):
        count = min(batch, n_debates - start)
        with transaction.atomic():
            debates = Debate.objects.bulk_create(
                [
                    Debate(
                        question_id=question_ids[(start + i) % len(question_ids)],
                        tournament=tournament,
                        tournament_key=f"b{start + i}",
                        protocol="debate",
                        settings={"rounds": rounds},
                        constitution=constitution,
                        debater_a=a,
                        debater_b=b,
                        status=Debate.Status.FINISHED,
                        seed=start + i,
                        started_at=now,
                        finished_at=now,
                    )  # fmt: skip
                    for i in range(count)
                ]
            )
            turns = []
            verdicts = []
            for i, debate in enumerate(debates):
                k = start + i
                index = 0
                for rnd in range(1, rounds + 1):
                    for side in (0, 1):
                        turns.append(
                            Turn(
                                debate=debate,
                                index=index,
                                round=rnd,
                                side=side,
                                text=_speech(k, side, rnd, words),
                                prompt_hash="",
                                started_at=now,
                                finished_at=now,
                            )  # fmt: skip
                        )
                        index += 1
                for j in range(min(judges, n_verdicts - made)):
                    p_a = 0.05 + ((k * 37 + j * 11) % 90) / 100
                    verdicts.append(
                        Verdict(
                            debate=debate,
                            kind=Verdict.Kind.AI,
                            ai_judge=ai_judges[j],
                            judge_label=ai_judges[j].label,
                            shown_first=(k + j) % 2,
                            p_a=p_a,
                            p_b=1 - p_a,
                            reason="",
                            correct=(0 if p_a > 0.5 else 1) == gold[question_ids[k % len(question_ids)]],
                        )  # fmt: skip
                    )
                    made += 1
            Turn.objects.bulk_create(turns, batch_size=batch)
            Verdict.objects.bulk_create(verdicts, batch_size=batch)
        bar.update(len(verdicts))
    bar.close()


def existing(config: dict[str, int]) -> int | None:
    """A complete bench tournament generated with ``config``, if any."""
    import django

    django.setup()
    from arena.models import Tournament
    from judging.models import Verdict

    for tournament in Tournament.objects.filter(name=TAG).order_by("-pk"):
        if tournament.config != config:
            continue
        if Verdict.objects.filter(debate__tournament=tournament).count() == config["verdicts"]:
            return tournament.pk
    return None


def clean() -> None:
    import django

    django.setup()
    from arena.models import Debate, QuestionSet, Tournament

    # Debates PROTECT their question: delete them (and their turns and verdicts) first.
    for tournament in Tournament.objects.filter(name=TAG):
        Debate.objects.filter(tournament=tournament).delete()
        tournament.delete()
    QuestionSet.objects.filter(name=TAG).delete()


def export_phase(tournament: int, file_format: str, out: Path, chunk: int, ahead: int) -> dict[str, object]:
    """Runs in its own process: the export alone, its wall time and its peak RSS."""
    import django

    django.setup()
    import pyarrow  # noqa: F401 - imported before the baseline, as the export needs it anyway

    from judging.exports import ExportRequest, TqdmProgress, run_export

    baseline = _peak_rss_mb()
    cpu_before = _cpu_s()
    req = ExportRequest(kind="arguments", format="conversational", file_format=file_format, tournament=tournament)
    started = time.perf_counter()
    with TqdmProgress("verdict", file=sys.stderr) as update:
        result = run_export(req, out, progress=update, chunk=chunk, ahead=ahead)
    seconds = time.perf_counter() - started
    cpu = _cpu_s() - cpu_before
    return {
        "format": file_format,
        "reader": "thread" if ahead else "inline",
        "rows": result.rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(result.rows / seconds),
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(_peak_rss_mb()),
        "baseline_rss_mb": round(baseline),
        "file_mb": round(result.path.stat().st_size / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verdicts", type=int, default=1_000_000, help="verdict records to export (default 1,000,000)")
    parser.add_argument("--judges", type=int, default=1, help="AI verdicts per debate (default 1: one row per debate)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per debate, two speeches each (default 1)")
    parser.add_argument("--questions", type=int, default=500, help="distinct questions (default 500)")
    parser.add_argument("--words", type=int, default=100, help="words per speech (default 100)")
    parser.add_argument("--batch", type=int, default=5000, help="bulk_create batch size (default 5000)")
    parser.add_argument("--chunk", type=int, default=2000, help="export chunk size (default 2000)")
    parser.add_argument("--formats", default="parquet", help="comma-separated: parquet, jsonl (default parquet)")
    parser.add_argument(
        "--compare-inline",
        action="store_true",
        help="also time Parquet with the database read in the exporting thread (no reader thread), side by side",
    )
    parser.add_argument("--out", type=Path, help="where to write the exports (default: a temporary folder)")
    parser.add_argument("--regenerate", action="store_true", help="generate new data even if a matching set exists")
    parser.add_argument("--clean", action="store_true", help="delete the bench data and exit")
    parser.add_argument("--phase", choices=["export"], help=argparse.SUPPRESS)
    parser.add_argument("--tournament", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ahead", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase == "export":
        print(json.dumps(export_phase(args.tournament, args.formats, args.out, args.chunk, args.ahead)))
        return 0
    if args.clean:
        clean()
        print("bench data deleted")
        return 0
    if args.verdicts < 1 or args.judges < 1 or args.rounds < 1 or args.questions < 1:
        parser.error("--verdicts, --judges, --rounds and --questions must be positive")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in ("parquet", "jsonl") for f in formats):
        parser.error("--formats takes parquet and/or jsonl")

    database = os.environ.get("DATABASE_URL", "(SQLite in ARENA_DATA_DIR)")
    print(f"database: {database.split('@')[-1]}")
    config = {
        "verdicts": args.verdicts,
        "judges": args.judges,
        "rounds": args.rounds,
        "questions": args.questions,
        "words": args.words,
    }
    tournament = None if args.regenerate else existing(config)
    if tournament is None:
        started = time.perf_counter()
        generate(args.verdicts, args.judges, args.rounds, args.questions, args.words, args.batch)
        print(f"generated {args.verdicts} verdicts in {time.perf_counter() - started:.1f} s")
        tournament = existing(config)
        assert tournament is not None
    else:
        print(f"reusing the {args.verdicts} verdicts of tournament {tournament} ({config})")

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        base = args.out or Path(tmp)
        results = []
        runs = [(fmt, 2) for fmt in formats] + ([("parquet", 0)] if args.compare_inline else [])
        for fmt, ahead in runs:
            out = base / f"export-{fmt}-{time.time_ns()}"
            child = subprocess.run(
                [sys.executable, __file__, "--phase", "export", "--tournament", str(tournament), "--formats", fmt,
                 "--out", str(out), "--chunk", str(args.chunk), "--ahead", str(ahead)],
                stdout=subprocess.PIPE, text=True, check=True,
            )  # fmt: skip
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(
        f"\nload average while measuring (1, 5, 15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'format':<8} {'reader':<7} {'rows':>9} {'seconds':>8} {'rows/s':>8} {'CPU s':>6} "
        f"{'peak RSS':>9} {'baseline':>9} {'file':>9}"
    )
    for r in results:
        print(
            f"{r['format']:<8} {r['reader']:<7} {r['rows']:>9} {r['seconds']:>8} {r['rows_per_s']:>8} {r['cpu_s']:>6} "
            f"{r['peak_rss_mb']:>6} MB {r['baseline_rss_mb']:>6} MB {r['file_mb']:>6} MB"
        )
    threaded = next((r for r in results if r["format"] == "parquet" and r["reader"] == "thread"), None)
    inline = next((r for r in results if r["format"] == "parquet" and r["reader"] == "inline"), None)
    if threaded is not None and inline is not None:
        print(f"reader thread vs inline: {float(inline['seconds']) / float(threaded['seconds']):.2f}x faster")
    if threaded is not None:
        scaled = float(threaded["seconds"]) * 1_000_000 / max(int(threaded["rows"]), 1)
        ok = scaled <= 60 and int(threaded["peak_rss_mb"]) <= 1024
        print(
            f"goal (1M rows to Parquet in ≤ 60 s, peak RSS ≤ 1 GB): {'met' if ok else 'NOT met'} "
            f"({scaled:.0f} s per 1M rows, {threaded['peak_rss_mb']} MB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
