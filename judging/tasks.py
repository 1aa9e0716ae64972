"""Celery tasks of the judging app: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def export_task(self, export_id: int) -> str:  # type: ignore[no-untyped-def]
    """Write one queued :class:`judging.models.Export`; progress is stored on its row as it goes."""
    from judging.exports import run_export_job

    redelivered = bool((getattr(self.request, "delivery_info", None) or {}).get("redelivered"))
    return run_export_job(export_id, redelivered=redelivered)
