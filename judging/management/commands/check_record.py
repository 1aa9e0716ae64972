from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from judging.record import check_record


class Command(BaseCommand):
    help = (
        "Check every invariant the analysis and the exports rely on (judging/record.py): each verdict's "
        "'correct' matches its probabilities on the gold answer (empty for 50/50) and they sum to 1; each "
        "debate's turns are contiguous and match its protocol's slots; quote checks match the question's "
        "current story; no question with debates differs from what those debates saw. Prints each violation "
        "and exits with status 1 if there is any, 0 otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--debate", type=int, action="append", help="check only this debate (repeatable)")

    def handle(self, *args: object, **opts: object) -> None:
        debates = opts.get("debate")
        violations = check_record(debates if isinstance(debates, list) else None)
        for violation in violations:
            self.stderr.write(str(violation))
        if violations:
            raise CommandError(f"{len(violations)} violation(s) of the record's invariants")
        self.stdout.write(self.style.SUCCESS("the record is consistent"))
