from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from judging.nyu import CONDITIONS, PAPER_ACCURACY, SAMPLE_DIR, NYUImportError, import_release, release_accuracy


class Command(BaseCommand):
    help = (
        "Import debates of the NYU 2023 human debate release (Michael et al. 2023, CC-BY-4.0): stories and "
        "questions, speeches (quotes as <quote>…</quote>, verified), the live judge's final verdict (its "
        "per-round probabilities in the verdict's meta) and offline judges' verdicts, each debate's condition "
        "from debates-metadata.jsonl. Re-importing replaces what an earlier import wrote. Without DIR, imports "
        f"the sample shipped with the app ({SAMPLE_DIR})."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", nargs="?", default=str(SAMPLE_DIR), help="folder of debate JSON files and debates-metadata.jsonl")
        parser.add_argument("--quiet", action="store_true", help="no progress bar or summary table")

    def handle(self, *args: object, **opts: object) -> None:
        directory = Path(str(opts["directory"]))
        try:
            report = import_release(directory, progress=not opts["quiet"])
        except NYUImportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"imported {report.debates_created} new and {report.debates_updated} updated debate(s): "
            f"{report.turns} speeches, {report.verdicts} verdicts"
        )
        if report.unfinished:
            self.stdout.write(f"never finished in the release (kept, cancelled, no verdict): {', '.join(report.unfinished)}")
        if report.without_metadata:
            self.stdout.write(f"no metadata line (condition guessed): {', '.join(report.without_metadata)}")
        if opts["quiet"]:
            return
        paper = release_accuracy(directory, included_in_paper=True)
        if any(n for _, n in paper.values()):
            self.stdout.write("final live-judge accuracy over the whole release's metadata, rooms in the paper:")
            for condition in CONDITIONS:
                correct, n = paper.get(condition, (0, 0))
                if n:
                    reference = f" (paper: {PAPER_ACCURACY[condition]:.0%})" if condition in PAPER_ACCURACY else ""
                    self.stdout.write(f"  {condition:18s} {correct / n:6.1%} of {n}{reference}")
