"""The export itself: canonical blocks from the sources, row filters, formats, writers and card.

:func:`run_export` ties the layers together; :func:`canonical_blocks` streams the request's rows.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from judging.exports.card import Stats, render_card
from judging.exports.formats import arrow_schema, columns, to_format
from judging.exports.readahead import read_ahead
from judging.exports.records import Anonymizer, ExportError, Row
from judging.exports.request import FILE_FORMATS, UNIT, ExportRequest, keep_row
from judging.exports.rows import arguments_group_rows, group_stats, judgments_row, revisions_row, turns_rows
from judging.exports.sources import (
    CHUNK,
    candidate_queryset,
    empty_selection_message,
    iter_candidate_sets,
    iter_revisions,
    iter_verdict_groups,
    revision_queryset,
    selection,
    verdict_queryset,
)
from judging.exports.writers import (
    CARD,
    DATA_STEM,
    ExportResult,
    JsonlWriter,
    ParquetWriter,
    save_hf,
    split_of,
)


@dataclass
class Block:
    """One chunk of the stream: how many source records it consumed and the canonical rows."""

    consumed: int
    rows: list[Row]
    skipped: int


def canonical_blocks(req: ExportRequest, anonymize: Anonymizer, chunk: int = CHUNK, ahead: int = 2) -> Iterator[Block]:
    """The request's canonical rows, block by block (selection filters applied, row filters not).

    The records are read ``ahead`` chunks in advance by a reader thread (see :func:`read_ahead`).
    """
    if req.kind in ("arguments", "judgments"):
        judgments = req.kind == "judgments"
        verdicts = verdict_queryset(req=req)
        for consumed, groups in read_ahead(
            lambda: iter_verdict_groups(verdicts, judgments=judgments, chunk=chunk), ahead
        ):
            rows: list[Row] = []
            skipped = 0
            for group in groups:
                if judgments:
                    stats = group_stats(group)
                    for record in group:
                        row = judgments_row(record, anonymize, stats)
                        if row is None:
                            skipped += 1
                        else:
                            rows.append(row)
                else:
                    made = arguments_group_rows(group, anonymize, per_verdict=req.per_verdict)
                    if req.per_verdict:
                        skipped += len(group) - len(made)
                    elif not made:
                        skipped += len(group)
                    rows += made
            yield Block(consumed, rows, skipped)
    elif req.kind == "turns":
        candidates = candidate_queryset(req)
        for consumed, sets in read_ahead(lambda: iter_candidate_sets(candidates, chunk=chunk), ahead):
            rows = []
            skipped = 0
            for cs in sets:
                made = turns_rows(cs, anonymize, all_pairs=req.all_pairs)
                skipped += 0 if made else 1
                rows += made
            yield Block(consumed, rows, skipped)
    else:
        revisions = revision_queryset(req)
        for consumed, records in read_ahead(lambda: iter_revisions(revisions, chunk=chunk), ahead):
            rows = []
            skipped = 0
            for r in records:
                row = revisions_row(r, anonymize)
                if row is None:
                    skipped += 1
                else:
                    rows.append(row)
            yield Block(consumed, rows, skipped)


ProgressFn = Callable[[int, int], None]


def _fewer_gc_passes(blocks: Iterator[Block]) -> Iterator[Block]:
    """The blocks, with the cyclic garbage collector running rarely meanwhile.

    An export allocates millions of short-lived, acyclic objects; at the default thresholds the
    collector walks them over and over (about a fifth of the run time). Reference counting frees
    them as before; only cycles wait a little longer.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), old[1], old[2])
    try:
        yield from blocks
    finally:
        gc.set_threshold(*old)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ExportError(f"{path} exists and is not empty (use --overwrite)")


def _anonymizer(req: ExportRequest) -> Anonymizer:
    if req.stable_judge_ids:
        key = hmac.new(str(settings.ARENA_EXPORT_KEY).encode(), b"judge-ids", hashlib.sha256).digest()
        return Anonymizer(key)
    return Anonymizer()


def run_export(
    req: ExportRequest,
    out_dir: Path,
    *,
    overwrite: bool = False,
    hf_dir: Path | None = None,
    progress: ProgressFn | None = None,
    chunk: int = CHUNK,
    ahead: int = 2,
) -> ExportResult:
    """Write ``out_dir/preferences.{jsonl,parquet}`` and ``out_dir/README.md`` (the dataset card),
    and with ``hf_dir`` a ``datasets`` folder (``save_to_disk``) with train/test splits.

    Refuses (:class:`ExportError`, nothing written) an invalid request, a non-empty folder without
    ``overwrite``, and a selection with no rows. Files appear whole or not at all: they are written
    under temporary names and renamed at the end. ``progress(done, total)`` is called per chunk,
    counted in source records (verdicts, candidates or revisions). ``ahead`` chunks are read in
    advance by a reader thread (0: read in the caller's thread).
    """
    req.validate()
    _refuse_existing(out_dir, overwrite)
    if hf_dir is not None:
        if hf_dir.resolve() == out_dir.resolve():
            raise ExportError("the datasets folder (--hf) must differ from the output folder")
        _refuse_existing(hf_dir, overwrite)
    total = selection(req).count()
    if total == 0:
        raise ExportError(empty_selection_message(req))

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / f"{DATA_STEM}.{req.file_format}"
    tmp_path = out_dir / f".{data_path.name}.partial"
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    cols = columns(req.kind, req.format)
    names = [c[0] for c in cols]
    opened: list[JsonlWriter | ParquetWriter] = []
    try:
        schema = arrow_schema(req.kind, req.format)
        main: JsonlWriter | ParquetWriter
        main = JsonlWriter(tmp_path, names) if req.file_format == "jsonl" else ParquetWriter(tmp_path, schema)
        opened.append(main)
        split_writers: dict[str, ParquetWriter] = {}
        if hf_dir is not None:
            split_writers = {s: ParquetWriter(work / f"{s}.parquet", schema) for s in ("train", "test")}
            opened += split_writers.values()
        stats = Stats()
        anonymize = _anonymizer(req)
        done = 0
        # No transaction around the stream: progress updates (the Celery job's) must be visible to
        # other connections as they happen. PostgreSQL then holds the cursor's result server-side.
        for block in _fewer_gc_passes(canonical_blocks(req, anonymize, chunk=chunk, ahead=ahead)):
            out_rows: list[Row] = []
            by_split: dict[str, list[Row]] = {"train": [], "test": []}
            for row in block.rows:
                if not keep_row(row, req):
                    stats.filtered += 1
                    continue
                formatted = to_format(row, req.format)
                for one in formatted:
                    stats.observe(one)
                out_rows += formatted
                if split_writers:
                    split = split_of(str(row["story_id"]), req.test_fraction)
                    by_split[split] += formatted
                    stats.note_split(split, row)
            main.write(out_rows)
            for name, writer in split_writers.items():
                writer.write(by_split[name])
                stats.splits[name] += len(by_split[name])
            stats.rows += len(out_rows)
            stats.skipped += block.skipped
            done += block.consumed
            if progress is not None:
                progress(min(done, total), total)
        stats.consumed = done
        sha = main.close()
        split_paths = {name: (writer.path, writer.close()) for name, writer in split_writers.items()}
        if stats.rows == 0:
            raise ExportError(
                f"no rows: {total} {UNIT[req.kind]}(s) matched, but {stats.skipped} made no pair and "
                f"{stats.filtered} were removed by the row filters"
            )
        for stale in out_dir.glob(f"{DATA_STEM}.*"):
            if stale.suffix.lstrip(".") in FILE_FORMATS and stale != data_path:
                stale.unlink()
        tmp_path.replace(data_path)
        result = ExportResult(
            path=data_path,
            rows=stats.rows,
            skipped=stats.skipped,
            sha256=sha,
            filtered=stats.filtered,
            consumed=stats.consumed,
            splits=dict(stats.splits),
        )
        card = render_card(req, result, stats)
        (out_dir / CARD).write_text(card, encoding="utf-8")
        result.card = out_dir / CARD
        if hf_dir is not None:
            save_hf(split_paths, hf_dir, work, card)
            result.hf_dir = hf_dir
        return result
    except BaseException:
        for writer in opened:
            writer.abort()
        tmp_path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(work, ignore_errors=True)
            if out_dir.exists() and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_arguments_jsonl(
    out_dir: Path, *, overwrite: bool = False, judge_kind: str = "any", progress: bool = False
) -> ExportResult:
    """``arguments`` pairs, TRL conversational, as ``out_dir/preferences.jsonl`` plus the card."""
    req = ExportRequest(kind="arguments", format="conversational", file_format="jsonl", judge=judge_kind)
    if not progress:
        return run_export(req, out_dir, overwrite=overwrite)
    with TqdmProgress(UNIT[req.kind]) as update:
        return run_export(req, out_dir, overwrite=overwrite, progress=update)


class TqdmProgress:
    """A tqdm bar as a :data:`ProgressFn` (its total is learnt from the first call)."""

    def __init__(self, unit: str, file: object = None) -> None:
        self.unit = unit
        self.file = file
        self.bar: object = None

    def __enter__(self) -> ProgressFn:
        from tqdm import tqdm

        def update(done: int, total: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, unit=self.unit, desc="export", file=self.file, dynamic_ncols=True)
            self.bar.update(done - self.bar.n)  # type: ignore[attr-defined]

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()  # type: ignore[attr-defined]
