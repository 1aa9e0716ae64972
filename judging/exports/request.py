"""The export request: what to export and how, its validation, and the row filters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from judging.exports.formats import FORMATS
from judging.exports.records import ExportError, Row

KINDS = ("arguments", "turns", "revisions", "judgments")
FILE_FORMATS = ("jsonl", "parquet")
JUDGES = ("human", "ai", "any")

KIND_HELP = {
    "arguments": "one verdict (or one debate's verdicts) → the two sides' full arguments, by judge probability",
    "turns": "a best-of-N turn → two candidate speeches for the same prompt, by the AI judge's score",
    "revisions": "a critique-and-revision step (SL-CAI) → the revision over the draft",
    "judgments": "a verdict → the judge's answer to what it saw, labelled by whether it was right (unpaired)",
}
UNIT = {"arguments": "verdict", "judgments": "verdict", "turns": "candidate", "revisions": "revision"}


def parse_since(text: str) -> datetime:
    """An ISO date or date-time; a naive one is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ExportError(f"--since {text!r} is not an ISO date (YYYY-MM-DD) or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how. :meth:`validate` says what is wrong in words a researcher reads."""

    kind: str = "arguments"
    format: str = "conversational"
    file_format: str = "jsonl"
    judge: str = "any"
    min_margin: float | None = None
    min_agreement: float | None = None
    constitution: str = ""
    since: datetime | None = None
    tournament: int | None = None
    correct_only: bool = False
    per_verdict: bool = False
    all_pairs: bool = False
    test_fraction: float = 0.1
    stable_judge_ids: bool = False
    # Human verdicts that break an exposure rule (docs/judging.md) are left out unless this is set.
    include_flagged: bool = False
    # Verdicts of deactivated judges stay in the record, flagged: left out unless this is set.
    include_deactivated: bool = False
    # The researcher page's counterpart of the command's --hf: the background job also writes a
    # datasets folder (train/test splits) next to the file, downloadable as a zip.
    datasets: bool = False

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ExportError(f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.format not in FORMATS:
            raise ExportError(f"unknown format {self.format!r}; known: {', '.join(FORMATS)}")
        if self.file_format not in FILE_FORMATS:
            raise ExportError(f"unknown file format {self.file_format!r}; known: {', '.join(FILE_FORMATS)}")
        if self.judge not in JUDGES:
            raise ExportError(f"unknown judge selection {self.judge!r}; known: {', '.join(JUDGES)}")
        if self.kind == "judgments" and self.format not in ("unpaired", "unpaired-standard"):
            raise ExportError(
                "judgments are unpaired (a judge's answer and whether it was right): "
                "use format unpaired or unpaired-standard"
            )
        if self.kind == "revisions" and self.format == "reward":
            raise ExportError("revisions have no margin, so no reward data: use conversational or standard")
        if self.kind == "turns" and self.judge == "human":
            raise ExportError("best-of-N candidates are scored by an AI judge: --judge human selects none")
        if self.kind == "revisions" and self.judge != "any":
            raise ExportError("revisions have no judge: leave the judge selection at 'any'")
        for name in ("min_margin", "min_agreement"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or not 0.0 <= value <= 1.0):
                raise ExportError(f"{name.replace('_', '-')} must be between 0 and 1 (got {value})")
        if self.min_margin is not None and self.kind == "revisions":
            raise ExportError("min-margin does not apply to revisions (they have no score)")
        if self.min_agreement is not None and self.kind not in ("arguments", "judgments"):
            raise ExportError("min-agreement applies to verdicts: kinds arguments and judgments")
        if self.per_verdict and self.kind != "arguments":
            raise ExportError("per-verdict applies to kind arguments (judgments are always one row per verdict)")
        if self.all_pairs and self.kind != "turns":
            raise ExportError("all-pairs applies to kind turns")
        if not (math.isfinite(self.test_fraction) and 0.0 <= self.test_fraction < 1.0):
            raise ExportError(f"test-fraction must be in [0, 1) (got {self.test_fraction})")
        if self.tournament is not None and self.tournament < 1:
            raise ExportError(f"tournament must be a positive id (got {self.tournament})")
        self.constitution_filter()

    def constitution_filter(self) -> tuple[str, int | None] | None:
        """``name`` or ``name@version`` → (name, version or None); None when not filtering."""
        text = self.constitution.strip()
        if not text:
            return None
        name, sep, version = text.partition("@")
        if not name or (sep and not version.isdigit()):
            raise ExportError(f"constitution {text!r} must be NAME or NAME@VERSION (e.g. arena-default@2)")
        return name, int(version) if sep else None

    def to_filters(self) -> dict[str, object]:
        """Everything but kind and format, as JSON (for ``Export.filters`` and the card)."""
        data = asdict(self)
        data.pop("kind")
        data.pop("format")
        data["since"] = self.since.isoformat() if self.since else None
        return data

    @classmethod
    def from_filters(cls, kind: str, fmt: str, filters: Mapping[str, object]) -> ExportRequest:
        known = {f for f in cls.__dataclass_fields__ if f not in ("kind", "format")}
        unknown = set(filters) - known
        if unknown:
            raise ExportError(f"unknown export options: {', '.join(sorted(unknown))}")
        data = dict(filters)
        since = data.get("since")
        if isinstance(since, str):
            data["since"] = parse_since(since)
        return cls(kind=kind, format=fmt, **data)  # type: ignore[arg-type]

    def describe_filters(self) -> list[str]:
        out = [f"judges: {self.judge}"]
        if self.min_margin is not None:
            out.append(f"min margin: {self.min_margin}")
        if self.min_agreement is not None:
            out.append(f"min agreement: {self.min_agreement}")
        if self.constitution:
            out.append(f"constitution: {self.constitution}")
        if self.since:
            out.append(f"since: {self.since.isoformat()}")
        if self.tournament is not None:
            out.append(f"tournament: {self.tournament}")
        if self.correct_only:
            out.append("correct only: yes")
        if self.kind == "arguments":
            out.append("rows: one per verdict" if self.per_verdict else "rows: one per debate (verdicts aggregated)")
        if self.kind == "turns":
            out.append("pairs: every pair of different scores" if self.all_pairs else "pairs: best against worst")
        return out


def keep_row(row: Row, req: ExportRequest) -> bool:
    """The row filters (applied after rows are built, so aggregates see every verdict)."""
    if req.min_margin is not None and float(row.get("margin") or 0.0) < req.min_margin:  # type: ignore[arg-type]
        return False
    if req.min_agreement is not None and float(row.get("agreement") or 0.0) < req.min_agreement:  # type: ignore[arg-type]
        return False
    if req.correct_only:
        flag = row.get("judge_correct", row.get("speaker_is_gold"))
        if not flag:
            return False
    return True
