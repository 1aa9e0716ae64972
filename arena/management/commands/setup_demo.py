from __future__ import annotations

import json
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser

from arena.constitution import default_constitution
from arena.importing import ensure_sample_set
from arena.roles import JUDGE, RESEARCHER, ensure_groups
from debaters.profiles import default_profile, evidence_profile

DEMO_USERS = (("researcher", RESEARCHER), ("judge", JUDGE))


class Command(BaseCommand):
    help = (
        "Prepare a fresh installation: roles, the default constitution, the two debater profiles on the embedded "
        "model (structured, and with the evidence tool), the bundled "
        "sample questions, and demo accounts (a researcher and a judge) whose credentials it prints."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-users", action="store_true", help="skip the demo accounts")

    def handle(self, *args: object, **opts: object) -> None:
        ensure_groups()
        constitution = default_constitution()
        profiles = [default_profile(), evidence_profile()]
        qset = ensure_sample_set()
        self.stdout.write(
            f"constitution {constitution}, debater profiles {', '.join(p.name for p in profiles)}, "
            f"question set {qset.name} ({qset.questions.count()} questions)"
        )
        if opts["no_users"]:
            return
        creds = self._demo_users()
        self.stdout.write(self.style.SUCCESS("Demo accounts (also in data/demo-credentials.json):"))
        for username, password in creds.items():
            self.stdout.write(f"  {username:12s} password: {password}")

    def _demo_users(self) -> dict[str, str]:
        path = settings.DATA_DIR / "demo-credentials.json"
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        for username, role in DEMO_USERS:
            user = User.objects.filter(username=username).first()
            if user is None or username not in stored:
                password = stored.get(username) or secrets.token_urlsafe(9)
                user = user or User(username=username)
                user.set_password(password)
                user.is_staff = role == RESEARCHER
                user.save()
                stored[username] = password
            user.groups.add(Group.objects.get(name=role))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, path)
        return stored
