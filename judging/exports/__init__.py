"""Preference datasets derived from stored debates, candidates, revisions and verdicts.

One module per concern, from the bottom:

* :mod:`~judging.exports.records`: **records** (:class:`VerdictRecord`, :class:`CandidateSet`,
  :class:`RevisionRecord`) hold what an export needs about one source record, detached from the
  ORM; :class:`Anonymizer` hashes judge identities.
* :mod:`~judging.exports.rows`: **row builders** (:func:`arguments_row`,
  :func:`arguments_group_rows`, :func:`turns_rows`, :func:`revisions_row`, :func:`judgments_row`)
  are pure: records in, *canonical* rows out. A canonical pair row is TRL's conversational
  preference format (``prompt``/``chosen``/``rejected`` as message lists); a canonical unpaired row
  is TRL's conversational unpaired format (``prompt``/``completion``/``label``). Both carry
  provenance columns.
* :mod:`~judging.exports.formats`: **formats** (:func:`to_format`) turn one canonical row into the
  rows of an output format; :func:`columns` and :func:`arrow_schema` describe them.
* :mod:`~judging.exports.request`: the **request** (:class:`ExportRequest`) and its row filters
  (:func:`keep_row`).
* :mod:`~judging.exports.sources`: **sources** stream records from the database in chunks (one
  server-side cursor plus one query per chunk for the texts), so memory stays bounded whatever the
  size; :mod:`~judging.exports.readahead` reads them a few chunks ahead in a thread.
* :mod:`~judging.exports.writers`: **writers** write JSONL or Parquet (one row group per chunk)
  and, with ``hf_dir``, a Hugging Face ``datasets`` folder whose train/test splits never share a
  question.
* :mod:`~judging.exports.card`: the **dataset card**.
* :mod:`~judging.exports.pipeline`: :func:`run_export` ties them together and writes the card.
* :mod:`~judging.exports.jobs`: :func:`start_export` and :func:`run_export_job` are the actions
  behind the researcher page and its Celery task.

This package re-exports the entry points callers use. docs/datasets.md says exactly what each kind
of pair and each column means.
"""

from __future__ import annotations

from judging.exports.card import render_card
from judging.exports.formats import (
    DEBATE_COLUMNS,
    FORMAT_COLUMNS,
    FORMAT_HELP,
    FORMATS,
    KIND_COLUMNS,
    Column,
    arrow_schema,
    columns,
    hh_transcript,
    render_prompt,
    to_format,
)
from judging.exports.jobs import export_file, export_folder, export_root, run_export_job, start_export
from judging.exports.pipeline import (
    Block,
    ProgressFn,
    TqdmProgress,
    canonical_blocks,
    export_arguments_jsonl,
    run_export,
)
from judging.exports.readahead import read_ahead
from judging.exports.records import (
    Anonymizer,
    CandidateData,
    CandidateSet,
    DebateInfo,
    ExportError,
    JudgeQuestionData,
    Message,
    RevisionRecord,
    Row,
    SpeechData,
    VerdictRecord,
)
from judging.exports.request import FILE_FORMATS, JUDGES, KIND_HELP, KINDS, UNIT, ExportRequest, keep_row, parse_since
from judging.exports.rows import (
    ANSWER_INSTRUCTION,
    LETTERS,
    GroupStats,
    arguments_group_rows,
    arguments_row,
    clean_messages,
    group_stats,
    judgment_completion,
    judgment_prompt,
    judgments_row,
    neutral_prompt,
    revisions_row,
    side_argument,
    turns_rows,
)
from judging.exports.sources import (
    CHUNK,
    candidate_queryset,
    empty_selection_message,
    iter_candidate_sets,
    iter_records,
    iter_revisions,
    iter_verdict_groups,
    revision_queryset,
    selection,
    verdict_queryset,
)
from judging.exports.writers import CARD, DATA_STEM, ExportResult, split_of

__all__ = [
    "ANSWER_INSTRUCTION",
    "CARD",
    "CHUNK",
    "DATA_STEM",
    "DEBATE_COLUMNS",
    "FILE_FORMATS",
    "FORMATS",
    "FORMAT_COLUMNS",
    "FORMAT_HELP",
    "JUDGES",
    "KINDS",
    "KIND_COLUMNS",
    "KIND_HELP",
    "LETTERS",
    "UNIT",
    "Anonymizer",
    "Block",
    "CandidateData",
    "CandidateSet",
    "Column",
    "DebateInfo",
    "ExportError",
    "ExportRequest",
    "ExportResult",
    "GroupStats",
    "JudgeQuestionData",
    "Message",
    "ProgressFn",
    "RevisionRecord",
    "Row",
    "SpeechData",
    "TqdmProgress",
    "VerdictRecord",
    "arguments_group_rows",
    "arguments_row",
    "arrow_schema",
    "candidate_queryset",
    "canonical_blocks",
    "clean_messages",
    "columns",
    "empty_selection_message",
    "export_arguments_jsonl",
    "export_file",
    "export_folder",
    "export_root",
    "group_stats",
    "hh_transcript",
    "iter_candidate_sets",
    "iter_records",
    "iter_revisions",
    "iter_verdict_groups",
    "judgment_completion",
    "judgment_prompt",
    "judgments_row",
    "keep_row",
    "neutral_prompt",
    "parse_since",
    "read_ahead",
    "render_card",
    "render_prompt",
    "revision_queryset",
    "revisions_row",
    "run_export",
    "run_export_job",
    "selection",
    "side_argument",
    "split_of",
    "start_export",
    "to_format",
    "turns_rows",
    "verdict_queryset",
]
