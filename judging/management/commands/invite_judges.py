from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from judging.invitations import InvitationError, create_invitation
from judging.models import Study


class Command(BaseCommand):
    help = (
        "Make single-use invitation links for new judges (there is no open sign-up; docs/judging.md). "
        "Prints one link per line: BASE_URL/join/TOKEN. Only a hash of each token is stored, so this is "
        "the only time the links are shown."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=1, help="how many links (1 to 500; default 1)")
        parser.add_argument("--study", default="", metavar="NAME", help="the study the judges are invited for")
        parser.add_argument("--days", type=int, help="days each link stays valid (default ARENA_INVITATION_DAYS)")
        parser.add_argument("--note", default="", help="who the links are for (shown to researchers)")
        parser.add_argument("--by", required=True, metavar="USERNAME", help="the researcher making the invitations")
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000",
            help="where the app is served (default http://127.0.0.1:8000)",
        )

    def handle(self, *args: object, **opts: object) -> None:
        count = opts["count"]
        if not isinstance(count, int) or not 1 <= count <= 500:
            raise CommandError("--count must be between 1 and 500")
        researcher = get_user_model().objects.filter(username=opts["by"]).first()
        if researcher is None:
            raise CommandError(f"no user named {opts['by']!r}")
        study = None
        if opts["study"]:
            study = Study.objects.filter(name=opts["study"]).first()
            if study is None:
                known = ", ".join(Study.objects.values_list("name", flat=True)[:20]) or "none"
                raise CommandError(f"no study named {opts['study']!r} (known: {known})")
        base = str(opts["base_url"]).rstrip("/")
        days = opts["days"]
        for _ in range(count):
            try:
                _, token = create_invitation(
                    created_by=researcher, study=study, note=str(opts["note"]),
                    days=days if isinstance(days, int) else None,
                )
            except InvitationError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{base}/join/{token}/")
