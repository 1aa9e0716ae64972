"""A whole tournament on the embedded model: debates per hour and the share of time the backend was busy.

Builds DEBATERS debater profiles on the embedded SmolLM2 (the same model at different sampling
temperatures, so they are different players), takes QUESTIONS questions of the bundled QuALITY
sample, and runs the tournament in this process exactly as a Celery worker would (the lockstep batch
runner over chunks of ``--chunk-size`` debates, ``--concurrency`` chunks in flight, then the AI judge
on every finished debate). Every pair of debaters meets on every question with both side assignments
and both answer orders, so the size is 4 · D(D−1)/2 · Q debates (8 × 16 gives 1,792).

Measured, at the ModelAPI boundary (every call the runner and the judge make):

* debates/hour: finished debates over wall time (judging included);
* backend busy share: the share of wall time with at least one request in flight at the backend;
* mean requests in flight while busy: how full the batches could be (the transformers backend batches
  the requests that are in flight together);
* completion tokens per second, and the judging's share of the wall time.

It writes to a throw-away SQLite database unless ``--database-url`` names another (it creates
tables, profiles and a tournament there). It needs Redis for the turn streams: REDIS_URL, or the
embedded one is started. Example (a reduced size that runs in minutes on two cores)::

    python bench/ratings_tournament.py --debaters 2 --questions 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class BusyMeter:
    """Time with at least one request in flight, and the time integral of the number in flight.

    Every wrapper shares one meter and runs on one event loop, so no lock is needed.
    """

    inflight: int = 0
    busy_s: float = 0.0
    area: float = 0.0  # ∫ inflight dt
    requests: int = 0
    _last: float = 0.0

    def _advance(self) -> None:
        now = time.monotonic()
        if self.inflight:
            self.busy_s += now - self._last
            self.area += self.inflight * (now - self._last)
        self._last = now

    def enter(self) -> None:
        self._advance()
        self.inflight += 1
        self.requests += 1

    def exit(self) -> None:
        self._advance()
        self.inflight -= 1


def metered_factory(meter: BusyMeter):  # type: ignore[no-untyped-def]
    from debaters.backends import get_backend
    from debaters.backends.base import BackendSpec, ChatMessage, GenerateRequest, ModelAPI, StreamItem

    class Metered(ModelAPI):
        def __init__(self, inner: ModelAPI) -> None:
            super().__init__(inner.spec)
            self.inner = inner

        async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
            meter.enter()
            try:
                async for item in self.inner.generate(request):
                    yield item
            finally:
                meter.exit()

        async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
            meter.enter()
            try:
                return await self.inner.choice_probs(messages, labels)
            finally:
                meter.exit()

        def count_tokens(self, text: str) -> int:
            return self.inner.count_tokens(text)

    def factory(spec: BackendSpec) -> ModelAPI:
        return Metered(get_backend(spec))

    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debaters", type=int, default=8, help="debater profiles (default 8)")
    parser.add_argument("--questions", type=int, default=16, help="questions of the sample set (default 16)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per debate (default 1)")
    parser.add_argument("--max-tokens", type=int, default=48, help="max tokens per speech (default 48)")
    parser.add_argument("--context-tokens", type=int, default=300, help="story excerpt budget per debater (default 300)")
    parser.add_argument("--chunk-size", type=int, default=8, help="debates per chunk, stepped together (default 8)")
    parser.add_argument("--concurrency", type=int, default=2, help="chunks in flight at once (default 2)")
    parser.add_argument("--no-judge", action="store_true", help="debates only, no AI judge")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite database in a temporary folder")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="arena-bench-")
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp.name}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from arena import tournaments, worker_loop
    from arena.embedded import redis_is_up, start_redis, stop_process
    from arena.importing import ensure_sample_set
    from arena.models import Debate, Turn
    from debaters.models import DebaterProfile
    from judging.ai_verdicts import default_judge_profile
    from judging.models import Verdict

    redis_proc = None
    if settings.EMBEDDED_REDIS and not redis_is_up(settings.EMBEDDED_REDIS_PORT):
        redis_proc = start_redis(Path(tmp.name), settings.EMBEDDED_REDIS_PORT)
    try:
        call_command("migrate", verbosity=0)
        qset = ensure_sample_set()
        names = []
        for i in range(args.debaters):
            # Different temperatures make different players of the same model.
            temperature = round(0.1 + 1.4 * i / max(1, args.debaters - 1), 2)
            name = f"bench-t{temperature:g}".replace(".", "_")
            DebaterProfile.objects.update_or_create(
                name=name,
                defaults={"backend": "transformers", "model": "embedded", "options": {"device": settings.ARENA_DEFAULT_DEVICE},
                          "sampling": {"temperature": temperature, "top_p": 0.95}},
            )
            names.append(name)
        judges = [] if args.no_judge else [default_judge_profile().name]
        spec = tournaments.validate(
            {
                "name": f"bench {args.debaters}x{args.questions} {time.strftime('%H:%M:%S')}",
                "questions": {"set": qset.name, "limit": args.questions},
                "debaters": names,
                "judges": judges,
                "limits": {"rounds": args.rounds, "max_tokens": args.max_tokens, "word_limit": 60, "context_tokens": args.context_tokens},
                "chunk_size": args.chunk_size,
                "max_debates": 1_000_000,
            }
        )
        tournament = tournaments.create_tournament(spec)
        n_debates = tournament.debates.count()
        print(f"{args.debaters} debaters × {args.questions} questions → {n_debates} debates "
              f"({args.rounds} round(s), ≤{args.max_tokens} tokens/speech), judges: {', '.join(judges) or 'none'}")

        # Load the model before the clock starts: a tournament runs on a warm worker.
        from debaters.backends import get_backend

        backend = get_backend(DebaterProfile.objects.get(name=names[0]).backend_spec())
        worker_loop.run(backend.wait_ready())

        meter = BusyMeter(_last=time.monotonic())
        judge_time = [0.0]
        original = tournaments.judge_debates

        async def timed_judging(*a, **kw):  # type: ignore[no-untyped-def]
            started = time.monotonic()
            try:
                return await original(*a, **kw)
            finally:
                judge_time[0] += time.monotonic() - started

        tournaments.judge_debates = timed_judging  # type: ignore[assignment]
        from tqdm import tqdm

        bar = tqdm(total=n_debates, unit="debate", desc="tournament")
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            tournaments.run_inline(tournament.pk, "bench", concurrency=args.concurrency, model_factory=metered_factory(meter)),
            worker_loop.get_loop(),
        )
        while True:
            try:
                status = future.result(timeout=2.0)
                break
            except TimeoutError:
                bar.n = Debate.objects.filter(tournament=tournament, status=Debate.Status.FINISHED).count()
                bar.refresh()
        wall = time.monotonic() - started
        bar.n = Debate.objects.filter(tournament=tournament, status=Debate.Status.FINISHED).count()
        bar.close()
        tournaments.judge_debates = original  # type: ignore[assignment]

        finished = Debate.objects.filter(tournament=tournament, status=Debate.Status.FINISHED).count()
        tokens = sum(Turn.objects.filter(debate__tournament=tournament).values_list("completion_tokens", flat=True))
        verdicts = Verdict.objects.filter(debate__tournament=tournament).count()
        print()
        print(f"status                       {status}")
        print(f"debates finished             {finished} of {n_debates}, {verdicts} AI verdicts")
        print(f"wall time                    {wall:.1f} s (judging {judge_time[0]:.1f} s, {judge_time[0] / wall:.0%} of it)")
        print(f"debates/hour                 {finished / wall * 3600:.0f}")
        print(f"completion tokens/s          {tokens / wall:.1f} ({tokens} tokens)")
        print(f"backend busy share           {meter.busy_s / wall:.0%} (≥1 request in flight {meter.busy_s:.1f} s of {wall:.1f} s)")
        mean_inflight = meter.area / meter.busy_s if meter.busy_s else 0.0
        print(f"requests in flight when busy {mean_inflight:.1f} on average ({meter.requests} requests)")
    finally:
        stop_process(redis_proc)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
