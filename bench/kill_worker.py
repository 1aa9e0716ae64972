"""Nothing stuck: DEBATES debates on the embedded model, the Celery worker SIGKILLed at random moments
KILLS times, under ``manage.py serve`` as ``make run`` starts it (embedded Redis, SQLite).

For each phase the benchmark starts its own ``serve`` in a fresh data folder with a short lease
(``--lease``), queues the debates, and kills serve's worker child whenever at least one debate has
made progress since the last kill (after a random wait). ``serve`` starts the worker again; the
lease sweep takes the debates back. It reports, per kill, the time until the first debate that was
in flight at the kill moved again (a new committed speech, or new streamed text under a new lease
owner) and until every one of them did (those taken back queue behind debates that never started
when there are more debates than ``--concurrency``), and at the end: debates finished, speeches
missing (a finished debate without all its speeches), speeches repeated or changed (a speech
committed before a kill that differs afterwards; the database allows one per index). Goal: moving
again within the lease plus 10 s.

Phases (side by side): ``baseline`` runs with the sweep off (``ARENA_SWEEP_SECONDS=0``), which is
how the app recovered before: only a worker's start-up scan and the broker's visibility timeout;
``new`` with the sweep on. Every wait is bounded (``--phase-timeout``). Example::

    python bench/kill_worker.py --debates 20 --kills 5 --lease 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker_pid(serve_pid: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == serve_pid and "celery" in cmdline and "worker" in cmdline:
            return int(entry.name)
    return None


@dataclass
class Phase:
    name: str
    finished: int = 0
    debates: int = 0
    missing: int = 0
    changed: int = 0
    first_moves_s: list[float] = field(default_factory=list)
    recoveries_s: list[float] = field(default_factory=list)
    late: int = 0
    unrecovered: int = 0
    wall_s: float = 0.0
    load: str = ""


def run_phase(name: str, args: argparse.Namespace, rng: random.Random) -> Phase:
    data = Path(tempfile.mkdtemp(prefix=f"kill-worker-{name}-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        ARENA_DATA_DIR=str(data), ARENA_EMBEDDED_REDIS_PORT=str(_free_port()), ARENA_LEASE_SECONDS=str(args.lease),
        ARENA_SWEEP_SECONDS="0" if name == "baseline" else str(args.sweep), CELERY_VISIBILITY_TIMEOUT="3600",
        DJANGO_SETTINGS_MODULE="arena.settings",
    )
    # The converted model of the main data folder: a fresh folder would convert the GGUF file again.
    env.setdefault("ARENA_MODEL_CACHE", str(ROOT / "data" / "models" / "smollm2-135m-instruct"))
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "--noinput"], ["setup_demo", "--no-users"]):
        done = subprocess.run([*manage, *command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"manage.py {command[0]} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    log = (data / "serve.log").open("wb")
    serve = subprocess.Popen([*manage, "serve", "--port", str(_free_port()), "--concurrency", str(args.concurrency)],
                             env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    os.environ.update(env)
    import django

    django.setup()
    from arena import services
    from arena.engine.protocol import Limits, make_protocol
    from arena.models import Debate, Question, Turn
    from arena.streaming import read_inflight
    from debaters.profiles import default_profile

    phase = Phase(name)
    try:
        deadline = time.monotonic() + 120
        while _worker_pid(serve.pid) is None or b"ready." not in (data / "serve.log").read_bytes():
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"serve did not start: {(data / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        questions = list(Question.objects.order_by("pk")[: args.debates])
        ids = [
            services.create_debate(
                question=questions[i % len(questions)], debater_a=default_profile(), debater_b=default_profile(),
                limits=Limits(rounds=args.rounds, max_tokens=args.max_tokens, word_limit=120, context_tokens=args.context_tokens),
                seed=i,
            ).pk
            for i in range(args.debates)
        ]
        phase.debates = len(ids)

        # One loop for every Redis read: the app's client is per loop, a loop per call would leak them.
        loop = asyncio.new_event_loop()

        def progress() -> dict[int, tuple[int, int, str]]:
            """debate -> (committed speeches, sum of in-flight seqs, lease owner)."""
            rows = {d: (0, 0, "") for d in ids}
            for pk, owner in Debate.objects.filter(pk__in=ids).values_list("pk", "lease_owner"):
                inflight = loop.run_until_complete(read_inflight(pk))
                rows[pk] = (Turn.objects.filter(debate_id=pk).count(), sum(int(e["seq"]) for e in inflight.values()), owner)
            return rows

        started = time.monotonic()
        end = started + args.phase_timeout
        committed_at_kills: dict[tuple[int, int], tuple[str, object]] = {}
        for kill in range(args.kills):
            time.sleep(rng.uniform(args.min_wait, args.max_wait))
            before = progress()
            # In flight: running under a lease. A finished debate keeps its last lease owner, so the
            # owner alone counted finished debates too, which could never move again.
            live = set(Debate.objects.filter(pk__in=ids, status=Debate.Status.RUNNING).values_list("pk", flat=True))
            running = [d for d, row in before.items() if row[2] and d in live]
            if not running or time.monotonic() > end:
                break
            for t in Turn.objects.filter(debate_id__in=ids):
                committed_at_kills[(t.debate_id, t.index)] = (t.text, t.finished_at)
            pid = _worker_pid(serve.pid)
            if pid is None:
                continue
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            print(f"[{name}] kill {kill + 1}: worker {pid}, {len(running)} debate(s) in flight", flush=True)
            pending = set(running)
            first_move: float | None = None
            while pending and time.monotonic() < min(end, killed_at + args.recovery_timeout):
                time.sleep(0.5)
                now_rows = progress()
                for d in list(pending):
                    turns, seqs, owner = now_rows[d]
                    # A new speech, or new text streamed under a new owner (the worker that took it over).
                    if (owner and owner != before[d][2] and (turns, seqs) != before[d][:2]) or turns > before[d][0]:
                        pending.discard(d)
                        first_move = first_move or time.monotonic()
            if first_move is None:
                phase.unrecovered += 1
                print(f"[{name}]   nothing moved {time.monotonic() - killed_at:.0f} s after the kill", flush=True)
                break
            phase.first_moves_s.append(first_move - killed_at)
            if pending:
                # Taken back, but queued behind debates that never started (the worker runs --concurrency at once).
                phase.late += len(pending)
                print(f"[{name}]   moving again after {first_move - killed_at:.1f} s; {len(pending)} still queued "
                      f"{args.recovery_timeout:.0f} s later", flush=True)
                continue
            phase.recoveries_s.append(time.monotonic() - killed_at)
            print(f"[{name}]   moving again after {first_move - killed_at:.1f} s, every debate in flight after "
                  f"{phase.recoveries_s[-1]:.1f} s", flush=True)
        # Debates that did not move after a kill stay stuck (the baseline): no use waiting for them.
        while time.monotonic() < end and not phase.unrecovered:
            if not Debate.objects.filter(pk__in=ids).exclude(status__in=["finished", "failed"]).exists():
                break
            time.sleep(2)
        phase.wall_s = time.monotonic() - started
        phase.finished = Debate.objects.filter(pk__in=ids, status="finished").count()
        for debate in Debate.objects.filter(pk__in=ids, status="finished"):
            indexes = list(Turn.objects.filter(debate=debate).order_by("index").values_list("index", flat=True))
            total = make_protocol(debate.protocol, debate.settings).total_turns()
            phase.missing += total - len(indexes)
        for t in Turn.objects.filter(debate_id__in=ids):
            old = committed_at_kills.get((t.debate_id, t.index))
            if old is not None and old != (t.text, t.finished_at):
                phase.changed += 1
        one, five, _ = os.getloadavg()
        phase.load = f"load {one:.1f} (5 min {five:.1f})"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debates", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--lease", type=int, default=10, help="ARENA_LEASE_SECONDS for the stack (short, so a test does not wait)")
    parser.add_argument("--sweep", type=int, default=2, help="ARENA_SWEEP_SECONDS in the new phase")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--context-tokens", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--min-wait", type=float, default=3.0, help="random wait before a kill, lower bound (s)")
    parser.add_argument("--max-wait", type=float, default=15.0)
    parser.add_argument("--recovery-timeout", type=float, default=120.0, help="give up on a kill after this long")
    parser.add_argument("--phase-timeout", type=float, default=1200.0)
    parser.add_argument("--phases", default="baseline,new")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    phases = [name.strip() for name in args.phases.split(",")]
    if len(phases) > 1:
        # Django is set up once per process: each phase runs in a process of its own.
        print("| phase | debates | kills | kill -> moving again | speeches | wall | load |\n|---|---|---|---|---|---|---|", flush=True)
        for name in phases:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--phases", name], check=False)
        return
    phase = run_phase(phases[0], args, rng)
    first, every = phase.first_moves_s, phase.recoveries_s
    print(
        f"| {phase.name} | {phase.finished}/{phase.debates} finished | {len(first)} of {len(first) + phase.unrecovered} kills "
        f"recovered | worker moving again after {', '.join(f'{r:.1f}' for r in first) or '-'} s; every debate in flight "
        f"after {', '.join(f'{r:.1f}' for r in every) or '-'} s ({phase.late} queued longer) | speeches missing "
        f"{phase.missing}, changed or repeated {phase.changed} | {phase.wall_s:.0f} s | {phase.load} |",
        flush=True,
    )

if __name__ == "__main__":
    main()
