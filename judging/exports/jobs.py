"""The background job: the actions behind the researcher page and its Celery task."""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena import dispatch
from judging.exports.pipeline import run_export
from judging.exports.records import ExportError
from judging.exports.request import FILE_FORMATS, ExportRequest
from judging.exports.sources import empty_selection_message, selection
from judging.exports.writers import CARD, DATA_STEM
from judging.models import Export

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

log = logging.getLogger(__name__)

# The Celery task that runs an export (judging/tasks.py), queued by name: see arena/dispatch.py.
EXPORT_TASK = "judging.tasks.export_task"


DATASETS_DIR = "datasets"
DATASETS_ZIP = "datasets.zip"


def zip_folder(folder: Path, target: Path) -> None:
    """``folder`` as a zip (stored, not compressed: Arrow shards hardly shrink), written whole or not at all."""
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    partial.replace(target)


def export_root() -> Path:
    return Path(settings.ARENA_EXPORT_DIR)


def export_folder(export_id: int) -> Path:
    """Where an export's files live: named by its id only, so no request can choose a path."""
    return export_root() / f"export-{int(export_id)}"


def start_export(req: ExportRequest, user: AbstractBaseUser | None) -> Export:
    """Validate, check the selection is not empty, record the export and queue it once committed."""
    req.validate()
    if not selection(req).exists():
        raise ExportError(empty_selection_message(req))
    with transaction.atomic():
        export = Export.objects.create(kind=req.kind, format=req.format, filters=req.to_filters(), created_by=user)
        transaction.on_commit(lambda: _enqueue(export.pk))
    return export


def _enqueue(export_id: int) -> None:
    dispatch.enqueue(EXPORT_TASK, export_id)


def run_export_job(export_id: int, *, redelivered: bool = False) -> str:
    """Run one queued export (the Celery task's body). Returns the export's final status.

    Claims the row with a conditional UPDATE, so a duplicate delivery does nothing; a redelivered
    task (its worker died) may take over a running one. Progress is stored on the row about twice
    a second for the page to poll; the row count, hash and path when the export is written.
    """
    claimable = [Export.Status.QUEUED] + ([Export.Status.RUNNING] if redelivered else [])
    claimed = Export.objects.filter(pk=export_id, status__in=claimable).update(
        status=Export.Status.RUNNING, progress=0.0, rows=0, error=""
    )
    if claimed != 1:
        current = Export.objects.filter(pk=export_id).values_list("status", flat=True).first()
        return str(current or "missing")
    export = Export.objects.get(pk=export_id)
    last = [float("-inf")]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            Export.objects.filter(pk=export_id).update(progress=done / total if total else 1.0)

    out = export_folder(export_id)
    try:
        req = ExportRequest.from_filters(export.kind, export.format, export.filters or {})
        hf_dir = out / DATASETS_DIR if req.datasets else None
        result = run_export(req, out, overwrite=True, progress=progress, hf_dir=hf_dir)
        if hf_dir is not None:
            zip_folder(hf_dir, out / DATASETS_ZIP)
    except ExportError as exc:
        Export.objects.filter(pk=export_id).update(
            status=Export.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
        return Export.Status.FAILED
    except Exception as exc:
        log.exception("export %s failed", export_id)
        Export.objects.filter(pk=export_id).update(
            status=Export.Status.FAILED,
            error=f"internal error: {type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        return Export.Status.FAILED
    Export.objects.filter(pk=export_id).update(
        status=Export.Status.FINISHED,
        progress=1.0,
        rows=result.rows,
        path=str(result.path.relative_to(export_root())),
        sha256=result.sha256,
        finished_at=timezone.now(),
    )
    return Export.Status.FINISHED


def export_file(export: Export, which: str) -> Path | None:
    """The data file (``which="data"``), card (``"card"``) or zipped datasets folder (``"datasets"``)
    of a finished export, or None.

    The path is built from the export's id and fixed names only, and must resolve inside the
    export folder: nothing a request or the database says can point elsewhere.
    """
    if export.status != Export.Status.FINISHED:
        return None
    folder = export_folder(export.pk).resolve()
    if which == "card":
        name = CARD
    elif which == "datasets":
        name = DATASETS_ZIP
    elif which == "data":
        fmt = (export.filters or {}).get("file_format", "jsonl")
        if fmt not in FILE_FORMATS:
            return None
        name = f"{DATA_STEM}.{fmt}"
    else:
        return None
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        return None
    return path
