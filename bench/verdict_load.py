"""Verdicts by the hundred while a crowd watches: RATE verdict POSTs a second for DURATION seconds,
each from a distinct judge on a distinct assignment, while SPECTATORS WebSocket clients follow a
live debate. Afterwards the verdicts are counted in the database: none lost, none duplicated.

Against running servers (``manage.py serve``), one or more targets measured in turn and printed
side by side; a target is ``NAME=URL[,VAR=VALUE...]`` as in bench/ws_fanout.py (the variables
reach the same database for the management commands). What it creates, through the app's commands:
one finished 1-round debate to judge (``run_debate``), RATE×DURATION judges assigned to it with a
signed-in session each (``create_judges --sessions-out``), and the live debate the spectators
watch (``run_debate --no-wait``). Example::

    python bench/verdict_load.py --username researcher --password ... \\
        --target core=http://127.0.0.1:8001,ARENA_DATA_DIR=data/bench-core,ARENA_EMBEDDED_REDIS_PORT=6391 \\
        --target new=http://127.0.0.1:8000,ARENA_DATA_DIR=data/bench-new --rate 50 --duration 60 --spectators 500

Prints per target: verdicts answered 302, errors (any other answer, or none), verdicts stored
(counted with ``manage.py shell``), duplicates, response time p50/p95/max, and whether the
spectators followed to the end. Loops are bounded by DURATION and ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arena_client import Target, create_debate, follow, load_note, percentile, sessions_for  # noqa: E402

REASON = "The quoted passages support the first answer more directly than the second."


@dataclass
class Result:
    target: str
    sent: int
    ok: int
    errors: dict[str, int]
    stored: int
    distinct: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    achieved_rate: float
    spectators: int
    followed: int
    gaps: int
    live_s: float
    load: str


def _finished_debate(target: Target, question: str) -> int:
    debate_id = create_debate(target, question, 1, 16)
    # run_debate follows nothing with --no-wait: wait for the worker through the same command's table.
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = _shell(target, f"from arena.models import Debate; print(Debate.objects.get(pk={debate_id}).status)")
        if status == "finished":
            return debate_id
        if status in ("failed", "cancelled"):
            raise SystemExit(f"[{target.name}] debate {debate_id} {status}")
        time.sleep(3)
    raise SystemExit(f"[{target.name}] debate {debate_id} did not finish")


def _shell(target: Target, code: str) -> str:
    return target.manage("shell", "-c", code).strip().splitlines()[-1]


async def _post(client: httpx.AsyncClient, debate_id: int, session: str, latencies: list[float], errors: dict[str, int]) -> bool:
    csrf = secrets.token_hex(16)
    started = time.monotonic()
    try:
        answer = await client.post(
            f"/judge/debates/{debate_id}/",
            data={"p_first": "0.7", "p_second": "0.3", "reason": REASON, "csrfmiddlewaretoken": csrf},
            cookies={"sessionid": session, "csrftoken": csrf},
            headers={"Referer": f"{client.base_url}judge/"},
        )
    except httpx.HTTPError as exc:
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        return False
    latencies.append(time.monotonic() - started)
    if answer.status_code != 302:
        errors[f"HTTP {answer.status_code}"] = errors.get(f"HTTP {answer.status_code}", 0) + 1
        return False
    return True


async def run_target(target: Target, args: argparse.Namespace) -> Result:
    judged = _finished_debate(target, args.question)
    count = args.rate * args.duration
    prefix = f"vl{int(time.time())}x"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sessions"
        target.manage("create_judges", "--count", str(count), "--prefix", prefix, "--debate", str(judged), "--sessions-out", str(out))
        sessions = [line.split()[1] for line in out.read_text().splitlines() if line.strip()]
    watchers = await sessions_for(target, args.username, args.password, max(1, math.ceil(args.spectators / args.sockets_per_session)))
    live = create_debate(target, args.question, args.rounds, args.max_tokens)
    deadline = time.monotonic() + args.timeout
    spectators = [
        asyncio.ensure_future(follow(target, live, watchers[i // args.sockets_per_session], deadline)) for i in range(args.spectators)
    ]
    await asyncio.sleep(args.warmup)  # let the spectators connect and the debate start streaming
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=target.url, timeout=60, limits=limits, follow_redirects=False) as client:
        started = time.monotonic()
        window_from = time.time()
        posts = []
        for i, session in enumerate(sessions):
            delay = started + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            posts.append(asyncio.ensure_future(_post(client, judged, session, latencies, errors)))
        oks = await asyncio.gather(*posts)
        elapsed = time.monotonic() - started
        window_to = time.time()
    followers = await asyncio.gather(*spectators)
    stored = int(_shell(target, f"from judging.models import Verdict; print(Verdict.objects.filter(debate_id={judged}, judge__username__startswith='{prefix}').count())"))
    distinct = int(_shell(target, f"from judging.models import Verdict; print(Verdict.objects.filter(debate_id={judged}, judge__username__startswith='{prefix}').values('judge').distinct().count())"))
    # How long the watched debate was actually running while the verdicts came: its speeches end at
    # the model's end of text, so a debate can finish before the POSTs (more --rounds then).
    ran = _shell(
        target,
        f"from arena.models import Debate; d = Debate.objects.get(pk={live}); "
        "print(d.started_at.timestamp() if d.started_at else 0, d.finished_at.timestamp() if d.finished_at else 0)",
    ).split()
    live_from, live_to = float(ran[0]) or window_to, float(ran[1]) or window_to
    live_s = max(0.0, min(live_to, window_to) - max(live_from, window_from))
    return Result(
        target=target.name, sent=len(sessions), ok=sum(oks), errors=errors, stored=stored, distinct=distinct,
        p50_ms=1000 * percentile(latencies, 0.5), p95_ms=1000 * percentile(latencies, 0.95),
        max_ms=1000 * max(latencies, default=float("nan")), achieved_rate=len(sessions) / elapsed,
        spectators=len(followers), followed=sum(f.finished for f in followers), gaps=sum(f.gaps for f in followers),
        live_s=live_s, load=load_note(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", required=True, help="NAME=URL[,VAR=VALUE...] (repeatable; measured in order)")
    parser.add_argument("--username", required=True, help="a researcher account for the spectators")
    parser.add_argument("--password", required=True)
    parser.add_argument("--rate", type=int, default=50, help="verdict POSTs a second")
    parser.add_argument("--duration", type=int, default=60, help="seconds of POSTs (RATE x DURATION judges are created)")
    parser.add_argument("--spectators", type=int, default=500)
    parser.add_argument("--sockets-per-session", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections the judges share")
    parser.add_argument("--question", default="quality-51274-c4d274ec")
    parser.add_argument("--max-tokens", type=int, default=80, help="speech length of the watched debate")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the watched debate (its speeches end at the model's end of text)")
    parser.add_argument("--warmup", type=float, default=20, help="seconds between the spectators' start and the first POST")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the spectators follow at most")
    args = parser.parse_args()
    rows = []
    for spec in args.target:
        target = Target.parse(spec)
        print(f"[{target.name}] {args.rate}/s for {args.duration} s, {args.spectators} spectators...", flush=True)
        rows.append(asyncio.run(run_target(target, args)))
        print(f"  {rows[-1]}", flush=True)
    print()
    print("| target | verdicts sent (rate) | answered 302 | errors | stored / distinct | p50 / p95 / max | spectators followed | gaps | debate live during POSTs | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.target} | {r.sent} ({r.achieved_rate:.1f}/s) | {r.ok} | {sum(r.errors.values())} {r.errors or ''} | "
            f"{r.stored} / {r.distinct} | {r.p50_ms:.0f} / {r.p95_ms:.0f} / {r.max_ms:.0f} ms | {r.followed}/{r.spectators} | "
            f"{r.gaps} | {r.live_s:.0f} of {r.sent / r.achieved_rate:.0f} s | {r.load} |"
        )


if __name__ == "__main__":
    main()
