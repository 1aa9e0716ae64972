"""Question sets in the browser: an uploaded JSONL file imported as ``import_questions`` does, and selectors.

The upload is written to a temporary file and handed to :func:`arena.importing.import_questions`,
so the browser gets exactly the command's validation: every bad line with its number, and nothing
imported when one is bad.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, Q, QuerySet

from arena.importing import ImportFailed, ImportResult, import_questions
from arena.models import Question, QuestionSet

# The sample's 111 questions over 32 stories take 3.5 MB; a file this big is not a question set.
MAX_UPLOAD_BYTES = 200 * 2**20


def import_upload(upload: UploadedFile, set_name: str, description: str = "") -> ImportResult:
    """Import an uploaded JSONL file into the set ``set_name``; raises :class:`ImportFailed`."""
    if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
        raise ImportFailed([], f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
        handle.flush()
        return import_questions(Path(handle.name), set_name, description)


def sets_with_counts() -> QuerySet[QuestionSet]:
    """Every set with its number of questions and of questions that have at least one debate."""
    return QuestionSet.objects.annotate(
        question_count=Count("questions", distinct=True),
        debated_count=Count("questions", filter=Q(questions__debates__isnull=False), distinct=True),
    ).order_by("name")


def search_questions(question_set: QuestionSet, text: str = "", debated_only: bool = False) -> QuerySet[Question]:
    """The set's questions whose id, question, answers or story title contain ``text``, with debate counts."""
    questions = question_set.questions.annotate(debate_count=Count("debates")).order_by("pk")
    text = text.strip()
    if text:
        questions = questions.filter(
            Q(external_id__icontains=text)
            | Q(question__icontains=text)
            | Q(source_title__icontains=text)
            | Q(answers__icontains=text)
        )
    if debated_only:
        questions = questions.filter(debate_count__gt=0)
    return questions
