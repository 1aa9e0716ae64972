"""The dataset card (README.md): what the rows are, every column, counts, filters, provenance."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from django.utils import timezone

from arena.models import QuestionSet
from judging.exports.formats import FORMAT_HELP, columns
from judging.exports.records import Row
from judging.exports.request import KIND_HELP, UNIT, ExportRequest
from judging.exports.writers import ExportResult


@dataclass
class Stats:
    """What the card reports, accumulated from the rows written."""

    rows: int = 0
    consumed: int = 0
    skipped: int = 0
    filtered: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    constitutions: Counter[str] = field(default_factory=Counter)
    debater_models: Counter[str] = field(default_factory=Counter)
    judge_kinds: Counter[str] = field(default_factory=Counter)
    judge_models: Counter[str] = field(default_factory=Counter)
    licences: Counter[str] = field(default_factory=Counter)
    protocols: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    question_sets: Counter[str] = field(default_factory=Counter)
    questions: set[str] = field(default_factory=set)
    split_stories: dict[str, set[str]] = field(default_factory=lambda: {"train": set(), "test": set()})
    split_questions: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: {"train": set(), "test": set()})

    def note_split(self, split: str, row: Row) -> None:
        """Count the stories and questions of each split (the card states them)."""
        self.split_stories[split].add(str(row["story_id"]))
        self.split_questions[split].add((str(row["question_set"]), str(row["question_id"])))

    def observe(self, row: Row) -> None:
        self.constitutions[str(row["constitution"])] += 1
        self.debater_models[str(row["debater_a_model"])] += 1
        self.debater_models[str(row["debater_b_model"])] += 1
        self.licences[str(row["source_licence"]) or "unknown"] += 1
        self.protocols[str(row["protocol"])] += 1
        self.question_sets[str(row["question_set"])] += 1
        if "judge_kind" in row:
            self.judge_kinds[str(row["judge_kind"])] += 1
            for model in str(row.get("judge_model") or "").split(","):
                if model:
                    self.judge_models[model] += 1
        if "label" in row:
            self.labels[str(row["label"]).lower()] += 1
        if len(self.questions) < 1_000_000:
            self.questions.add(str(row["question_id"]))


def _counter_lines(counter: Counter[str], empty: str = "none") -> str:
    if not counter:
        return f"  - {empty}\n"
    return "".join(f"  - `{name}`: {n} rows\n" for name, n in counter.most_common())


def _source_lines(stats: Stats) -> str:
    sets = {
        name: (origin, licence)
        for name, origin, licence in QuestionSet.objects.filter(name__in=list(stats.question_sets)).values_list(
            "name", "origin", "licence"
        )
    }
    lines = []
    for name, n in stats.question_sets.most_common():
        origin, licence = sets.get(name, ("", ""))
        lines.append(f"- `{name}` ({n} rows): origin {origin or 'not recorded'}; licence {licence or 'not recorded'}\n")
    lines.append("- licences of the texts, per row:\n" + _counter_lines(stats.licences))
    return "".join(lines)


def _licence_tag(licences: Counter[str]) -> str:
    known = {name.lower() for name in licences}
    if len(known) == 1:
        only = known.pop()
        if re.fullmatch(r"[a-z0-9.\-]+", only) and only != "unknown":
            return only
    return "other"


def render_card(req: ExportRequest, result: ExportResult, stats: Stats) -> str:
    """The dataset card (README.md): what the rows are, every column, counts, filters, provenance."""
    name = result.path.name
    loader = "json" if req.file_format == "jsonl" else "parquet"
    column_rows = "".join(
        f"| `{n}` | {t} | {meaning.replace('|', chr(92) + '|')} |\n" for n, t, meaning in columns(req.kind, req.format)
    )
    splits = ""
    if result.splits:
        counts = ", ".join(
            f"{name} {result.splits.get(name, 0)} rows from {len(stats.split_questions[name])} question(s) on "
            f"{len(stats.split_stories[name])} story(ies)"
            for name in ("train", "test")
        )
        splits = (
            f"- `--hf` splits, by story (a hash of `story_id`, test fraction {req.test_fraction}): everything about "
            "one source text (every question on it, in every question set, however the text is tokenised) is in "
            f"one split, so no story is in both: {counts}\n"
        )
    labels = ""
    if stats.labels:
        labels = f"- labels: {stats.labels.get('true', 0)} true, {stats.labels.get('false', 0)} false\n"
    filters = "".join(f"- {line}\n" for line in req.describe_filters())
    summary = KIND_HELP[req.kind][0].upper() + KIND_HELP[req.kind][1:]
    layout = "one JSON object a line" if req.file_format == "jsonl" else "Parquet, zstd-compressed row groups"
    id_scope = (
        "stable across exports that share ARENA_EXPORT_KEY"
        if req.stable_judge_ids
        else "stable within this export only"
    )
    return f"""---
license: {_licence_tag(stats.licences)}
task_categories: [text-generation]
tags: [debate, preference, rlaif, trl, scalable-oversight]
configs:
- config_name: default
  data_files: {name}
---
# Debate Arena preference data: {req.kind}, {req.format}

{summary}.

Format: {FORMAT_HELP[req.format]}. The rows are in `{name}` ({layout}). Load them with

```python
import datasets
ds = datasets.load_dataset("{loader}", data_files="{name}", split="train")
```

and pass it to TRL as it is (`DPOTrainer`, `RewardTrainer` for pairs; `KTOTrainer` for unpaired
rows). docs/datasets.md in Debate Arena defines every kind precisely.

## Columns

| column | type | meaning |
|---|---|---|
{column_rows}
## Counts

- rows: {result.rows}
- {UNIT[req.kind]}s read: {result.consumed}
- skipped (no preference, as a 50/50 verdict, which is neither right nor wrong; a side without speeches, no stored
  prompt, or nothing to pair): {result.skipped}
- removed by the row filters: {result.filtered}
- distinct questions: {len(stats.questions)}
{labels}{splits}
## Filters

- kind: {req.kind}
- format: {req.format}
{filters}
## Provenance

- constitution versions:
{_counter_lines(stats.constitutions)}- debater models (two per row):
{_counter_lines(stats.debater_models)}- judge kinds:
{_counter_lines(stats.judge_kinds)}- judge models:
{_counter_lines(stats.judge_models, "none (human judges only)")}- protocols:
{_counter_lines(stats.protocols)}- judge ids are keyed hashes, {id_scope}

## Source texts and licence

The debates are about the source texts of these question sets. Judgment prompts never contain
the texts; debater prompts (turns, revisions) contain the excerpts the debater saw.

{_source_lines(stats)}
## Content hash

- sha256 of `{name}`: `{result.sha256}`
- written: {timezone.now().isoformat(timespec="seconds")}
"""
