from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from judging.exports import ExportError, export_arguments_jsonl


class Command(BaseCommand):
    help = (
        "Export verdicts as preference data: TRL conversational pairs (prompt, chosen, rejected as message "
        "lists, margin, provenance columns) in OUT/preferences.jsonl, with a dataset card in OUT/README.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
        parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
        parser.add_argument("--judge", choices=["human", "ai", "any"], default="any", help="which verdicts")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: object, **opts: object) -> None:
        out = opts["out"]
        assert isinstance(out, Path)
        try:
            result = export_arguments_jsonl(
                out, overwrite=bool(opts["overwrite"]), judge_kind=str(opts["judge"]), progress=not opts["no_progress"]
            )
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"{result.rows} pairs → {result.path} ({result.skipped} skipped)"))
