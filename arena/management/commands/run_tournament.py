from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from arena import tournaments
from arena.models import Tournament
from arena.tournaments import EXAMPLE, TournamentConfigError, TournamentStateError



class Command(BaseCommand):
    help = (
        "Run a tournament defined in a YAML file: validate it, create its debates, queue them to the "
        "Celery workers and follow the progress (--inline runs it in this process instead). Also "
        "pauses, resumes, cancels or follows an existing tournament by id. --example prints a "
        "commented definition to start from."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="the tournament definition (YAML)")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--check", action="store_true", help="validate FILE and print what it would create, then stop")
        action.add_argument("--inline", action="store_true", help="run in this process with the batch runner (no worker needed)")
        action.add_argument("--no-follow", action="store_true", help="queue it and return at once")
        action.add_argument("--pause", type=int, metavar="ID", help="pause a running tournament")
        action.add_argument("--resume", type=int, metavar="ID", help="resume a paused tournament (queued to the workers, or --inline)")
        action.add_argument("--cancel", type=int, metavar="ID", help="cancel a tournament for good")
        action.add_argument("--follow", type=int, metavar="ID", help="follow a tournament's progress")
        action.add_argument("--status", type=int, metavar="ID", help="print a tournament's progress once")
        action.add_argument("--example", action="store_true", help="print an example definition")
        parser.add_argument("--run-inline", action="store_true", help="with --resume ID: run it here instead of on the workers")
        parser.add_argument("--concurrency", type=int, default=2, help="--inline: chunks in flight at once (default 2)")
        parser.add_argument("--user", default=None, help="username recorded as the tournament's creator")

    def handle(self, *args: object, **opts: object) -> None:
        if opts["example"]:
            self.stdout.write(EXAMPLE)
            return
        try:
            if opts["pause"] is not None:
                self._report(tournaments.pause(int(opts["pause"])))  # type: ignore[arg-type]
            elif opts["cancel"] is not None:
                self._report(tournaments.cancel(int(opts["cancel"])))  # type: ignore[arg-type]
            elif opts["resume"] is not None:
                tid = int(opts["resume"])  # type: ignore[arg-type]
                if opts["run_inline"]:
                    self._inline(tid, int(opts["concurrency"]))  # type: ignore[arg-type]
                else:
                    self._needs_broker()
                    self._report(tournaments.resume(tid))
                    self._follow(tid)
            elif opts["follow"] is not None:
                self._follow(int(opts["follow"]))  # type: ignore[arg-type]
            elif opts["status"] is not None:
                self._report(self._get(int(opts["status"])))  # type: ignore[arg-type]
            else:
                self._from_file(**opts)
        except TournamentStateError as exc:
            raise CommandError(str(exc)) from None
        except Tournament.DoesNotExist:
            raise CommandError("no such tournament") from None

    def _from_file(self, **opts: object) -> None:
        if not opts["file"]:
            raise CommandError("give a tournament file (see --example), or an action such as --status ID")
        path = Path(str(opts["file"]))
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            spec = tournaments.validate(tournaments.parse_yaml(text))
        except TournamentConfigError as exc:
            raise CommandError(str(exc)) from None
        planned = tournaments.plan(spec)
        self.stdout.write(
            f"{spec.name}: {len(spec.debaters)} debaters × {len(spec.questions)} questions × "
            f"{len(spec.protocols)} protocol(s) = {len(planned)} debates (both sides, both orders), "
            f"{len(planned) * len(spec.judges)} AI verdicts"
        )
        if opts["check"]:
            return
        if not opts["inline"]:
            self._needs_broker()
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no such user {opts['user']!r}")
        tournament = tournaments.create_tournament(spec, created_by=user)
        self.stdout.write(f"tournament {tournament.pk} created")
        if opts["inline"]:
            self._inline(tournament.pk, int(opts["concurrency"]))  # type: ignore[arg-type]
            return
        tournaments.start(tournament.pk)
        self.stdout.write(f"queued; pause with --pause {tournament.pk}, cancel with --cancel {tournament.pk}")
        if not opts["no_follow"]:
            self._follow(tournament.pk)

    def _needs_broker(self) -> None:
        from django.conf import settings

        from arena.embedded import redis_is_up

        if settings.EMBEDDED_REDIS and not redis_is_up(settings.EMBEDDED_REDIS_PORT):
            raise CommandError(
                f"no Redis on 127.0.0.1:{settings.EMBEDDED_REDIS_PORT}, so no worker can be running: start the app "
                "with `make run`, set REDIS_URL, or run the tournament here with --inline"
            )

    def _inline(self, tournament_id: int, concurrency: int) -> None:
        from django.conf import settings

        from arena import worker_loop
        from arena.embedded import redis_is_up, start_redis, stop_process

        redis_proc = None
        if settings.EMBEDDED_REDIS and not redis_is_up(settings.EMBEDDED_REDIS_PORT):
            # Turns still stream through the channel layer, so an inline run brings its own Redis.
            redis_proc = start_redis(settings.DATA_DIR, settings.EMBEDDED_REDIS_PORT)
        owner = f"{socket.gethostname()}:{os.getpid()}:inline"
        tournament = self._get(tournament_id)
        bar = self._bar(tournament)
        # The run happens on the process's worker loop; this thread draws the bar from the database
        # (the truth, whoever does the work) once a second.
        future = asyncio.run_coroutine_threadsafe(
            tournaments.run_inline(tournament_id, owner, concurrency=concurrency), worker_loop.get_loop()
        )
        try:
            while True:
                try:
                    status = future.result(timeout=1.0)
                    break
                except concurrent.futures.TimeoutError:
                    self._update(bar, tournaments.progress(self._get(tournament_id)))
        except KeyboardInterrupt:
            tournaments.pause(tournament_id)
            future.cancel()
            bar.close()
            raise CommandError(f"interrupted: tournament paused; resume with --resume {tournament_id} --run-inline") from None
        finally:
            stop_process(redis_proc)
        self._update(bar, tournaments.progress(self._get(tournament_id)))
        bar.close()
        self._report(self._get(tournament_id))
        if status != Tournament.Status.FINISHED:
            self.stdout.write(f"stopped: {status}")

    def _follow(self, tournament_id: int) -> None:
        tournament = self._get(tournament_id)
        bar = self._bar(tournament)
        try:
            while True:
                tournament = self._get(tournament_id)
                self._update(bar, tournaments.progress(tournament))
                if tournament.status not in (Tournament.Status.RUNNING, Tournament.Status.PENDING):
                    break
                time.sleep(2.0)
        except KeyboardInterrupt:
            self.stdout.write(f"\nstopped following; tournament {tournament_id} goes on (--pause {tournament_id} to pause)")
            return
        finally:
            bar.close()
        self._report(tournament)

    def _bar(self, tournament: Tournament) -> tqdm:  # type: ignore[type-arg]
        progress = tournaments.progress(tournament)
        return tqdm(total=max(1, progress.turns_total + progress.verdicts_expected), unit="step", desc=tournament.name[:30])

    def _update(self, bar: tqdm, progress: tournaments.Progress) -> None:  # type: ignore[type-arg]
        bar.total = max(1, progress.turns_total + progress.verdicts_expected)
        bar.n = min(bar.total, progress.turns_done + progress.verdicts + progress.judge_errors)
        rate = f"{progress.tokens_per_s:.1f}" if progress.tokens_per_s else "-"
        eta = _duration(progress.eta_s) if progress.eta_s is not None else "-"
        bar.set_postfix_str(
            f"debates {progress.done}/{progress.total} running {progress.running} failed {progress.failed} "
            f"tok/s {rate} ETA {eta}",
            refresh=False,
        )
        bar.refresh()

    def _get(self, tournament_id: int) -> Tournament:
        return Tournament.objects.get(pk=tournament_id)

    def _report(self, tournament: Tournament) -> None:
        tournament.refresh_from_db()
        p = tournaments.progress(tournament)
        rate = f"{p.tokens_per_s:.1f} tok/s" if p.tokens_per_s else "no tokens yet"
        self.stdout.write(
            f"tournament {tournament.pk} ({tournament.name}): {tournament.status}; debates {p.finished} finished, "
            f"{p.running} running, {p.queued} queued, {p.failed} failed, {p.cancelled} cancelled of {p.total}; "
            f"{p.verdicts} AI verdicts; {p.completion_tokens} tokens in {_duration(p.active_s)} ({rate})"
        )
        if tournament.error:
            self.stdout.write(f"note: {tournament.error}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
