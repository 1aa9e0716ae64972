from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from arena import services
from arena.models import Debate
from arena.roles import JUDGE, ensure_groups


class Command(BaseCommand):
    help = (
        "Create judge accounts PREFIX0001…PREFIXNNNN in bulk (a class, a study, a load test), optionally "
        "assigned to a debate. With --sessions-out, also sign each one in and write 'username session-id' "
        "lines to that file (mode 0600): a load test then needs no password hashing per judge."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, required=True, help="how many judges (1-100000)")
        parser.add_argument("--prefix", required=True, help="username prefix; accounts that exist already are reused")
        parser.add_argument("--password", default=None, help="one password for all (default: none, they cannot sign in by form)")
        parser.add_argument("--debate", type=int, default=None, help="assign every judge to this debate")
        parser.add_argument("--sessions-out", type=Path, default=None, help="write a signed-in session per judge here")

    def handle(self, *args: object, **opts: object) -> None:
        count = opts["count"]
        if not isinstance(count, int) or not 1 <= count <= 100_000:
            raise CommandError("--count must be between 1 and 100000")
        prefix = str(opts["prefix"])
        debate = None
        if opts["debate"] is not None:
            debate = Debate.objects.filter(pk=opts["debate"]).first()
            if debate is None:
                raise CommandError(f"no debate {opts['debate']}")
        ensure_groups()
        group = Group.objects.get(name=JUDGE)
        # Hashed once: a bulk of accounts with one password costs one hash, not one each.
        password = make_password(opts["password"]) if opts["password"] else make_password(None)
        names = [f"{prefix}{i:04d}" for i in range(1, count + 1)]
        User = get_user_model()
        with transaction.atomic():
            existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
            User.objects.bulk_create([User(username=n, password=password) for n in names if n not in existing])
            users = list(User.objects.filter(username__in=names).order_by("username"))
            group.user_set.add(*users)
            if debate is not None:
                for user in users:
                    services.assign_judge(debate, user)
        self.stdout.write(f"{len(users)} judges ({len(users) - len(existing)} new){f', assigned to debate {debate.pk}' if debate else ''}")
        out = opts["sessions_out"]
        if isinstance(out, Path):
            lines = [f"{user.username} {_session_for(user)}" for user in users]
            out.write_text("\n".join(lines) + "\n")
            os.chmod(out, 0o600)
            self.stdout.write(f"sessions written to {out}")


def _session_for(user: AbstractBaseUser) -> str:
    """A signed-in session for ``user``, as django.contrib.auth.login would store it."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return str(session.session_key)
