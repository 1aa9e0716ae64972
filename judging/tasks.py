"""Celery tasks of the judging app: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from arena import worker_loop
from judging.deadlines import expire_question
from judging.exports.jobs import run_export_job
from judging.profile_checks import run_check


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def export_task(self, export_id: int) -> str:  # type: ignore[no-untyped-def]
    """Write one queued :class:`judging.models.Export`; progress is stored on its row as it goes."""
    redelivered = bool((getattr(self.request, "delivery_info", None) or {}).get("redelivered"))
    return run_export_job(export_id, redelivered=redelivered)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_profile_check_task(check_id: int) -> str:
    """Run a profile's "Test" (:func:`judging.profile_checks.run_check`) on the worker's event loop."""
    return worker_loop.run(run_check(check_id))


@shared_task(acks_late=True, reject_on_worker_lost=True)
def question_deadline_task(debate_id: int, after_round: int) -> str:
    """An interactive debate's judge question is due: go on without it if it was not asked
    (:func:`judging.deadlines.expire_question`)."""
    fallback = expire_question(debate_id, after_round)
    return fallback.used if fallback else "nothing to do"
