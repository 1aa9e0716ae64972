from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena.importing import MAX_STORY_CHARS, ImportFailed, import_questions


class Command(BaseCommand):
    help = (
        "Import questions from a JSONL file (one object a line: id, question, answers[2], correct_index, "
        "source{title,text,origin}, license). A bad line is reported with its number and nothing is imported. "
        "Re-importing is safe: answers in the other order are the same question; a question that debates use "
        f"cannot change (the line is refused). Stories are limited to {MAX_STORY_CHARS} characters."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the JSONL file")
        parser.add_argument("--set", dest="set_name", help="question set name (default: the file name)")
        parser.add_argument("--description", default="", help="description of a new set")

    def handle(self, *args: object, **options: object) -> None:
        path = options["file"]
        assert isinstance(path, Path)
        try:
            result = import_questions(path, options["set_name"], str(options["description"]))  # type: ignore[arg-type]
        except ImportFailed as exc:
            raise CommandError(f"{path}: {exc}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.question_set.name}: {result.created} question(s) created, {result.updated} updated, "
                f"{result.unchanged} unchanged"
            )
        )
        if result.recognised:
            self.stdout.write(
                f"{result.recognised} new question(s) are identical to questions of other sets "
                "(same story, question and answers) and keep those questions' answer order"
            )
