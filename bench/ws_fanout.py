"""Spectators on live debates: does every WebSocket client follow to the end, rebuild every speech
exactly, and how far apart do the clients get each delta?

Against running servers (``manage.py serve``), one or more *targets*, measured one after the other
in the same run so that the figures print side by side. A target is ``NAME=URL[,VAR=VALUE...]``:
the variables are what its management commands need to reach the same database and Redis (the
benchmark creates its debates with ``run_debate``). For the baseline, run a second stack with the
setting that selects the path before: ``ARENA_WS_FANOUT=per-socket`` (every socket its own group
member, one frame per event) or ``ARENA_CHANNEL_LAYER=core`` (the channel layer before that)::

    ARENA_DATA_DIR=data/bench-new  python manage.py serve --port 8000 &
    ARENA_DATA_DIR=data/bench-base ARENA_EMBEDDED_REDIS_PORT=6391 ARENA_WS_FANOUT=per-socket \\
        python manage.py serve --port 8001 &
    python bench/ws_fanout.py --username researcher --password ... \\
        --target per-socket=http://127.0.0.1:8001,ARENA_DATA_DIR=data/bench-base,ARENA_EMBEDDED_REDIS_PORT=6391 \\
        --target broadcast=http://127.0.0.1:8000,ARENA_DATA_DIR=data/bench-new \\
        --scenario 1000x1 --scenario 200x5

(each stack needs migrations, the sample questions and a researcher account: ``setup_demo``).
``--scenario CxD``: C clients on each of D debates started together (2 rounds on the embedded
model). The clients of one session share a login; the benchmark signs in once per
``--sockets-per-session`` clients (the server caps sockets per session).

Per scenario and target it prints: clients that followed to the end; speeches rebuilt exactly from
deltas (compared with the committed text in ``turn_end``); sequence gaps (each one cost a fresh
snapshot); refused or dropped connections; the time for all clients to connect; the fan-out
spread of each delta (last client's arrival minus first client's), p50/p95, twice: by the kernel's
receive stamps (the server's spread: the benchmark's thousand clients share one process, which
reads ready sockets one after the other, so its own stamps add its lateness) and by the time the
benchmark read each frame (an upper bound that includes the benchmark); and the frames a
client received against the events they carried (a ``batch`` frame carries several). Loops are bounded by
``--timeout`` per scenario. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arena_client import Follower, Target, create_debate, follow, load_note, percentile, sessions_for


@dataclass
class Result:
    target: str
    scenario: str
    clients: int
    followed: int
    exact: int
    speeches: int
    gaps: int
    refused: int
    connect_s: float
    spread_p50_ms: float
    spread_p95_ms: float
    kernel_p50_ms: float
    kernel_p95_ms: float
    frames: int
    events: int
    load: str
    errors: dict[str, int]


def _spreads(results: list[Follower], ids: list[int], stamps: str) -> list[float]:
    """Per delta of each debate: the last client's stamp minus the first's (clients that got it)."""
    spreads: list[float] = []
    for debate_id in ids:
        mine = [getattr(r, stamps) for r in results if r.debate_id == debate_id]
        for key in {k for times in mine for k in times}:
            times = [t[key] for t in mine if key in t]
            if len(times) > 1:
                spreads.append(max(times) - min(times))
    return spreads


async def run_scenario(target: Target, clients: int, debates: int, args: argparse.Namespace) -> Result:
    sessions = await sessions_for(
        target, args.username, args.password, math.ceil(clients * debates / args.sockets_per_session)
    )
    ids = [create_debate(target, args.question, args.rounds, args.max_tokens) for _ in range(debates)]
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    tasks = [
        asyncio.ensure_future(
            follow(target, debate_id, sessions[(d * clients + i) // args.sockets_per_session], deadline)
        )
        for d, debate_id in enumerate(ids)
        for i in range(clients)
    ]
    results: list[Follower] = await asyncio.gather(*tasks)
    connected = [r.connected_at - started for r in results if r.connected_at is not None]
    connect_s = max(connected) if connected else float("nan")
    spreads = _spreads(results, ids, "arrivals")
    kernel_spreads = _spreads(results, ids, "kernel_arrivals")
    errors: dict[str, int] = {}
    for mismatch in sorted({r.mismatch for r in results if r.mismatch}):
        print(f"  [{target.name}] debate speech not rebuilt exactly: {mismatch}", flush=True)
    for r in results:
        if r.error:
            label = r.error[:40] if r.error.startswith("connect") else r.error.split(":")[0]
            errors[label] = errors.get(label, 0) + 1
    return Result(
        target=target.name,
        scenario=f"{clients}x{debates}",
        clients=len(results),
        followed=sum(r.finished for r in results),
        exact=sum(r.exact for r in results),
        speeches=sum(r.exact + r.wrong for r in results),
        gaps=sum(r.gaps for r in results),
        refused=sum(1 for r in results if r.error.startswith("connect")),
        connect_s=connect_s,
        spread_p50_ms=1000 * percentile(spreads, 0.5),
        spread_p95_ms=1000 * percentile(spreads, 0.95),
        kernel_p50_ms=1000 * percentile(kernel_spreads, 0.5),
        kernel_p95_ms=1000 * percentile(kernel_spreads, 0.95),
        frames=sum(r.frames for r in results),
        events=sum(r.events for r in results),
        load=load_note(),
        errors=errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target", action="append", required=True, help="NAME=URL[,VAR=VALUE...] (repeatable; measured in order)"
    )
    parser.add_argument("--username", required=True, help="a researcher account on every target (may watch any debate)")
    parser.add_argument("--password", required=True)
    parser.add_argument(
        "--scenario", action="append", default=[], help="CLIENTSxDEBATES, e.g. 1000x1 or 200x5 (repeatable)"
    )
    parser.add_argument("--question", default="quality-51274-c4d274ec")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--sockets-per-session", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per scenario and target")
    args = parser.parse_args()
    targets = [Target.parse(t) for t in args.target]
    scenarios = [tuple(int(x) for x in s.split("x")) for s in (args.scenario or ["200x1"])]
    rows: list[Result] = []
    for clients, debates in scenarios:
        for target in targets:
            print(f"[{target.name}] {clients} clients x {debates} debate(s)...", flush=True)
            result = asyncio.run(run_scenario(target, clients, debates, args))
            print(f"  {result}", flush=True)
            rows.append(result)
    print()
    print(
        "| scenario | target | followed to the end | speeches rebuilt exactly | sequence gaps | refused | all connected in "
        "| spread p50 / p95 (kernel stamps) | spread p50 / p95 (read by the benchmark) | frames / events a client | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.scenario} | {r.target} | {r.followed}/{r.clients} | {r.exact}/{r.speeches} | {r.gaps} | {r.refused} | "
            f"{r.connect_s:.0f} s | {r.kernel_p50_ms:.0f} / {r.kernel_p95_ms:.0f} ms | {r.spread_p50_ms:.0f} / {r.spread_p95_ms:.0f} ms | "
            f"{r.frames / max(1, r.clients):.0f} / {r.events / max(1, r.clients):.0f} | {r.load} |"
        )
        if r.errors:
            print(f"|   | errors | {r.errors} |")


if __name__ == "__main__":
    main()
