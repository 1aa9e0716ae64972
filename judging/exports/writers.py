"""Writers: JSONL, Parquet (one row group per ``ROW_GROUP`` rows) and a Hugging Face ``datasets``
folder whose train/test splits never share a question."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from judging.exports.records import Row

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

ROW_GROUP = 10_000
DATA_STEM = "preferences"
CARD = "README.md"


def split_position(story_id: str) -> float:
    """Where a story falls in [0, 1): stories below the test fraction are the test split."""
    return int.from_bytes(hashlib.sha256(f"split:{story_id}".encode()).digest()[:8], "big") / 2**64


@functools.lru_cache(maxsize=65536)
def split_of(story_id: str, test_fraction: float) -> str:
    """``train`` or ``test``, from a hash of the story id (``arena.identity.story_id``): everything
    about one source text (every question on it, in every question set) lands in the same split, in
    every export."""
    return "test" if split_position(story_id) < test_fraction else "train"


class JsonlWriter:
    def __init__(self, path: Path, names: Sequence[str]) -> None:
        self.path = path
        self.names = list(names)
        self.handle = path.open("w", encoding="utf-8")
        self.digest = hashlib.sha256()

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        dumps = json.dumps
        names = self.names
        text = "".join(dumps({n: row.get(n) for n in names}, ensure_ascii=False) + "\n" for row in rows)
        data = text.encode("utf-8")
        self.digest.update(data)
        self.handle.write(text)

    def close(self) -> str:
        self.handle.close()
        return self.digest.hexdigest()

    def abort(self) -> None:
        self.handle.close()


class ParquetWriter:
    """Rows buffered into row groups of ``ROW_GROUP`` and written as they fill: bounded memory."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema
        self.names = schema.names
        self.writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self.buffer: list[Row] = []

    def write(self, rows: Sequence[Row]) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.buffer:
            return
        arrays = [pa.array([row.get(c.name) for row in self.buffer], type=c.type) for c in self.schema]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.buffer = []

    def abort(self) -> None:
        self.buffer = []
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            log.debug("closing an aborted Parquet file failed", exc_info=True)

    def close(self) -> str:
        self._flush()
        self.writer.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
        return digest.hexdigest()


@dataclass
class ExportResult:
    path: Path
    rows: int
    skipped: int
    sha256: str
    filtered: int = 0
    consumed: int = 0
    card: Path | None = None
    hf_dir: Path | None = None
    splits: dict[str, int] = field(default_factory=dict)


def save_hf(split_paths: Mapping[str, tuple[Path, str]], hf_dir: Path, work: Path, card: str) -> None:
    """A ``DatasetDict`` of the split files, saved next to ``hf_dir`` and swapped in when whole."""
    import datasets

    import pyarrow.parquet as pq

    def _split(path: Path) -> datasets.Dataset:
        if pq.ParquetFile(str(path)).metadata.num_rows == 0:
            # Splits are by story: a small export may have every story in one split. datasets
            # cannot read an empty Parquet file, but takes its (empty) table.
            return datasets.Dataset(pq.read_table(str(path)))
        return datasets.Dataset.from_parquet(str(path), cache_dir=str(work / "cache"), keep_in_memory=False)

    with _QuietDatasets():
        dd = datasets.DatasetDict({name: _split(path) for name, (path, _) in split_paths.items()})
        hf_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = hf_dir.parent / f".{hf_dir.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        # One shard at least per split, or an empty split would not load back.
        dd.save_to_disk(str(staging), num_shards={name: 1 for name, ds in dd.items() if len(ds) == 0})
    (staging / CARD).write_text(card, encoding="utf-8")
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    staging.replace(hf_dir)


class _QuietDatasets:
    """datasets prints progress bars per split; the export has its own."""

    def __enter__(self) -> None:
        import datasets

        self.was = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()

    def __exit__(self, *exc: object) -> None:
        import datasets

        if self.was:
            datasets.enable_progress_bars()
