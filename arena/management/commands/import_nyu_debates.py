from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from judging.nyu import CONDITIONS, PAPER_ACCURACY, SAMPLE_DIR, NYUImportError, import_release, release_accuracy


class Command(BaseCommand):
    help = (
        "Import debates of the NYU 2023 human debate release (Michael et al. 2023, CC-BY-4.0): stories and "
        "questions, speeches (quotes as <quote>…</quote>, verified), the live judge's final verdict (its "
        "per-round probabilities in the verdict's meta) and offline judges' verdicts, each debate's condition "
        "from debates-metadata.jsonl. Rooms that list a question's answers in the other order are mapped into "
        "the question's one stored order. Repairs the release's quirks (a quote span past the story's end is "
        "clamped; unfinished rooms are kept, cancelled) and reports them. Re-importing replaces what an earlier "
        "import wrote, but never changes a question that debates use. Without DIR, imports the sample shipped "
        f"with the app ({SAMPLE_DIR}). The whole release (631 rooms): the pub/ folder of "
        "https://github.com/julianmichael/debate, branch 2023-nyu-experiments; give that folder (or the checkout)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "directory",
            nargs="?",
            default=str(SAMPLE_DIR),
            help="the release's pub/ folder, a checkout holding it, or a folder of room JSON files and debates-metadata.jsonl",
        )
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
        self.stdout.write(f"{report.questions} question(s)")
        if report.reordered:
            self.stdout.write(
                f"{len(report.reordered)} room(s) list their question's answers in the other order; their sides and "
                "probabilities were mapped into the question's stored order"
            )
        if report.recognised:
            examples = "; ".join(report.recognised[:5]) + ("; …" if len(report.recognised) > 5 else "")
            self.stdout.write(
                f"{len(report.recognised)} question(s) identical to questions of other sets, stored in their order: {examples}"
            )
        if report.repaired:
            self.stdout.write("repaired:\n" + "\n".join(f"  {line}" for line in report.repaired))
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
