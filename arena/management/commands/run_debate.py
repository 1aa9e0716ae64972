from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from arena import services
from arena.engine.protocol import PROTOCOLS, ProtocolError, ProtocolSettings, make_protocol
from arena.models import Debate, Question
from debaters.models import DebaterProfile
from debaters.profiles import default_profile


class Command(BaseCommand):
    help = (
        "Start a debate on a question. By default it is queued to the Celery workers and this command "
        "follows it with a progress bar; --inline runs it in this process (no worker needed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--question", required=True, help="question id (external id such as quality-51274-c4d274ec, or database pk)")
        parser.add_argument("--rounds", type=int, default=2, help="number of rounds (default 2)")
        parser.add_argument(
            "--protocol", default="debate", choices=sorted(PROTOCOLS), help="protocol (default debate; see docs/protocols.md)"
        )
        parser.add_argument("--best-of-n", type=int, default=1, help="candidates per speech, scored by an AI judge (default 1: off)")
        parser.add_argument("--critique-rounds", type=int, default=0, help="critique-and-revision rounds per speech (default 0: off)")
        parser.add_argument("--debater-a", default=None, help="profile arguing answer 1 (default: the embedded model)")
        parser.add_argument("--debater-b", default=None, help="profile arguing answer 2 (default: the embedded model)")
        parser.add_argument("--max-tokens", type=int, default=120, help="max tokens per speech (default 120)")
        parser.add_argument("--word-limit", type=int, default=120, help="word limit per speech (default 120)")
        parser.add_argument("--context-tokens", type=int, default=None, help="story excerpt budget (default: the profile's)")
        parser.add_argument("--judge", action="append", default=[], help="username of a judge to assign (repeatable)")
        parser.add_argument("--seed", type=int, default=None)
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--inline", action="store_true", help="run in this process instead of a worker")
        mode.add_argument("--no-wait", action="store_true", help="queue it and return at once")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a queued debate")

    def handle(self, *args: object, **opts: object) -> None:
        from django.conf import settings

        from arena.embedded import redis_is_up, start_redis, stop_process

        redis_proc = None
        if settings.EMBEDDED_REDIS and not redis_is_up(settings.EMBEDDED_REDIS_PORT):
            if not opts["inline"]:
                raise CommandError(
                    f"no Redis on 127.0.0.1:{settings.EMBEDDED_REDIS_PORT}, so no worker can be running: start the "
                    "app with `make run`, set REDIS_URL, or run the debate here with --inline"
                )
            # The live stream still goes through a channel layer, so an inline run brings its own Redis.
            redis_proc = start_redis(settings.DATA_DIR, settings.EMBEDDED_REDIS_PORT)
        try:
            self._handle(**opts)
        finally:
            stop_process(redis_proc)

    def _handle(self, **opts: object) -> None:
        question = self._question(str(opts["question"]))
        debater_a = self._profile(opts["debater_a"])
        debater_b = self._profile(opts["debater_b"])
        context = opts["context_tokens"] if opts["context_tokens"] is not None else debater_a.context_tokens
        n, k = int(opts["best_of_n"]), int(opts["critique_rounds"])  # type: ignore[arg-type]
        limits = ProtocolSettings(
            rounds=int(opts["rounds"]),  # type: ignore[arg-type]
            max_tokens=int(opts["max_tokens"]),  # type: ignore[arg-type]
            word_limit=int(opts["word_limit"]),  # type: ignore[arg-type]
            context_tokens=context,  # type: ignore[arg-type]
            best_of_n=(n, n),
            critique_rounds=(k, k),
        )
        try:
            limits.validate()
        except ProtocolError as exc:
            raise CommandError(str(exc)) from None
        users = get_user_model().objects.filter(username__in=opts["judge"])  # type: ignore[misc]
        missing = set(opts["judge"]) - {u.username for u in users}  # type: ignore[arg-type]
        if missing:
            raise CommandError(f"no such judge(s): {', '.join(sorted(missing))}")
        debate = services.create_debate(
            question=question,
            debater_a=debater_a,
            debater_b=debater_b,
            limits=limits,
            judges=users,
            protocol=str(opts["protocol"]),
            seed=opts["seed"],  # type: ignore[arg-type]
            enqueue=not opts["inline"],
        )
        self.stdout.write(f"debate {debate.pk} created ({question.external_id}, {limits.rounds} rounds)")
        if opts["no_wait"]:
            return
        if opts["inline"]:
            self._run_inline(debate)
        else:
            self._follow(debate, float(opts["timeout"]))  # type: ignore[arg-type]
        debate.refresh_from_db()
        if debate.status != Debate.Status.FINISHED:
            raise CommandError(f"debate {debate.pk} {debate.status}: {debate.error}")
        self.stdout.write(self.style.SUCCESS(f"debate {debate.pk} finished in {debate.duration_s():.1f} s"))
        for turn in debate.turns.order_by("index"):
            self.stdout.write(f"\n[round {turn.round}] for {question.answers[turn.side]!r}:\n{turn.text}")

    def _question(self, ref: str) -> Question:
        qs = Question.objects.filter(external_id=ref)
        if ref.isdigit():
            qs = Question.objects.filter(pk=int(ref)) | qs
        question = qs.first()
        if question is None:
            raise CommandError(f"no question {ref!r}; import questions first (python manage.py import_questions FILE)")
        return question

    def _profile(self, name: object) -> DebaterProfile:
        if name is None:
            return default_profile()
        profile = DebaterProfile.objects.filter(name=str(name)).first()
        if profile is None:
            known = ", ".join(DebaterProfile.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no debater profile {name!r}; known: {known}")
        return profile

    def _run_inline(self, debate: Debate) -> None:
        import os
        import uuid

        from arena import worker_loop
        from arena.runner import run_debate

        total = make_protocol(debate.protocol, debate.settings).total_turns()
        with tqdm(total=total, desc=f"debate {debate.pk}", unit="turn") as bar:
            worker_loop.run(run_debate(debate.pk, f"cli:{os.getpid()}:{uuid.uuid4().hex[:8]}"))
            bar.update(debate.turns.count())

    def _follow(self, debate: Debate, timeout: float) -> None:
        total = make_protocol(debate.protocol, debate.settings).total_turns()
        deadline = time.monotonic() + timeout
        with tqdm(total=total, desc=f"debate {debate.pk}", unit="turn") as bar:
            while time.monotonic() < deadline:
                debate.refresh_from_db()
                done = debate.turns.count()
                bar.update(done - bar.n)
                if debate.status in (Debate.Status.FINISHED, Debate.Status.FAILED, Debate.Status.CANCELLED):
                    return
                time.sleep(0.5)
        raise CommandError(f"debate {debate.pk} did not finish within {timeout:.0f} s (is a worker running?)")
