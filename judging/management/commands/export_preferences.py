from __future__ import annotations

import argparse
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from judging.exports import (
    FILE_FORMATS,
    FORMAT_HELP,
    FORMATS,
    JUDGES,
    KIND_HELP,
    KINDS,
    UNIT,
    ExportError,
    ExportRequest,
    TqdmProgress,
    parse_since,
    run_export,
)


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _since(text: str):  # type: ignore[no-untyped-def]
    try:
        return parse_since(text)
    except ExportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Export stored debates and verdicts as a preference dataset that TRL loads as it is. Writes "
        "OUT/preferences.jsonl (or .parquet) and a dataset card OUT/README.md; with --hf DIR also a Hugging Face "
        "datasets folder (save_to_disk) with train/test splits that never share a question. "
        "docs/datasets.md defines every kind and column."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: object) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = (
            "kinds:\n"
            + "".join(f"  {k:<18} {v}\n" for k, v in KIND_HELP.items())
            + "formats:\n"
            + "".join(f"  {k:<18} {v}\n" for k, v in FORMAT_HELP.items())
            + "examples:\n"
            "  manage.py export_preferences --out exports/dpo\n"
            "  manage.py export_preferences --kind turns --format standard --file-format parquet --out exports/bon\n"
            "  manage.py export_preferences --kind judgments --format unpaired --judge human --hf exports/kto-hf "
            "--out exports/kto\n"
        )
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty)")
        parser.add_argument("--kind", choices=KINDS, default="arguments", help="which pairs (default: arguments)")
        parser.add_argument(
            "--format", choices=FORMATS, default="conversational", help="row format (default: conversational)"
        )
        parser.add_argument(
            "--file-format",
            choices=FILE_FORMATS,
            default="jsonl",
            help="file type of OUT/preferences.* (default: jsonl)",
        )
        parser.add_argument(
            "--hf", type=Path, metavar="DIR", help="also write a datasets folder with train/test splits"
        )
        parser.add_argument(
            "--test-fraction",
            type=_fraction,
            default=0.1,
            help="share of questions in the --hf test split (default 0.1)",
        )
        parser.add_argument("--judge", choices=JUDGES, default="any", help="which verdicts: human, ai or any")
        parser.add_argument("--min-margin", type=_fraction, help="keep rows whose margin is at least this (0–1)")
        parser.add_argument(
            "--min-agreement", type=_fraction, help="keep rows whose debate's judges agree at least this much (0–1)"
        )
        parser.add_argument("--constitution", default="", metavar="NAME[@VERSION]", help="only debates under it")
        parser.add_argument(
            "--since", type=_since, metavar="DATE", help="only verdicts (or turns) from this ISO date on"
        )
        parser.add_argument("--tournament", type=int, metavar="ID", help="only debates of this tournament")
        parser.add_argument(
            "--correct-only",
            action="store_true",
            help="only rows whose judge was right (speaker argued gold, for turns/revisions)",
        )
        parser.add_argument(
            "--per-verdict", action="store_true", help="arguments: one row per verdict instead of one per debate"
        )
        parser.add_argument(
            "--all-pairs", action="store_true", help="turns: every pair of candidates, not best vs worst"
        )
        parser.add_argument(
            "--stable-judge-ids",
            action="store_true",
            help="judge ids keyed by ARENA_EXPORT_KEY: the same across exports",
        )
        parser.add_argument(
            "--include-flagged",
            action="store_true",
            help="keep human verdicts that break an exposure rule (left out by default; docs/judging.md)",
        )
        parser.add_argument(
            "--include-deactivated",
            action="store_true",
            help="keep verdicts of judges a researcher deactivated (left out by default; docs/judging.md)",
        )
        parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: object, **opts: object) -> None:
        out = opts["out"]
        hf = opts["hf"]
        assert isinstance(out, Path)
        req = ExportRequest(
            kind=str(opts["kind"]),
            format=str(opts["format"]),
            file_format=str(opts["file_format"]),
            judge=str(opts["judge"]),
            min_margin=opts["min_margin"],  # type: ignore[arg-type]
            min_agreement=opts["min_agreement"],  # type: ignore[arg-type]
            constitution=str(opts["constitution"] or ""),
            since=opts["since"],  # type: ignore[arg-type]
            tournament=opts["tournament"],  # type: ignore[arg-type]
            correct_only=bool(opts["correct_only"]),
            per_verdict=bool(opts["per_verdict"]),
            all_pairs=bool(opts["all_pairs"]),
            test_fraction=float(opts["test_fraction"]),  # type: ignore[arg-type]
            stable_judge_ids=bool(opts["stable_judge_ids"]),
            include_flagged=bool(opts["include_flagged"]),
            include_deactivated=bool(opts["include_deactivated"]),
        )
        kwargs = {"overwrite": bool(opts["overwrite"]), "hf_dir": hf}
        try:
            if opts["no_progress"]:
                result = run_export(req, out, **kwargs)  # type: ignore[arg-type]
            else:
                with TqdmProgress(UNIT[req.kind], file=sys.stderr) as update:
                    result = run_export(req, out, progress=update, **kwargs)  # type: ignore[arg-type]
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        noun = "rows" if req.format.startswith("unpaired") else "pairs"
        lines = [f"{result.rows} {noun} → {result.path} ({result.skipped} skipped, {result.filtered} filtered)"]
        if result.hf_dir is not None:
            lines.append(
                f"datasets folder → {result.hf_dir} (train {result.splits.get('train', 0)}, "
                f"test {result.splits.get('test', 0)})"
            )
        lines.append(f"card → {result.card}; sha256 {result.sha256}")
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
