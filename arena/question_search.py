"""The question picker of the new-debate form: find a question among thousands by text or id.

A selector (reads only). ``search_questions`` matches the words typed against the question, its
external id and its story's title (every word must match one of them, case-insensitively), or a
numeric query against the primary key, optionally within one question set, and returns at most
``limit`` rows in id order, plus whether more matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from arena.models import Question

SEARCH_LIMIT = 20
MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class QuestionHit:
    id: int
    external_id: str
    question: str
    title: str
    question_set: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "external_id": self.external_id, "question": self.question,
            "title": self.title, "set": self.question_set,
        }


def search_questions(text: str, set_id: int | None = None, limit: int = SEARCH_LIMIT) -> tuple[list[QuestionHit], bool]:
    """Questions matching ``text`` (empty: all), in ``set_id`` if given; ``(hits, more_matched)``."""
    rows: QuerySet[Question] = Question.objects.select_related("question_set")
    if set_id is not None:
        rows = rows.filter(question_set_id=set_id)
    words = text.strip()[:MAX_QUERY_CHARS].split()
    if len(words) == 1 and words[0].isdigit():
        rows = rows.filter(Q(pk=int(words[0])) | Q(external_id__icontains=words[0]) | Q(question__icontains=words[0]))
    else:
        for word in words:
            rows = rows.filter(Q(question__icontains=word) | Q(external_id__icontains=word) | Q(source_title__icontains=word))
    found = list(rows.order_by("id")[: limit + 1])
    hits = [
        QuestionHit(q.pk, q.external_id, q.question, q.source_title, q.question_set.name) for q in found[:limit]
    ]
    return hits, len(found) > limit
