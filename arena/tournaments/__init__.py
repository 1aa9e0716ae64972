"""Tournaments: debaters × questions × protocols, judged by a panel of AI judges.

A tournament is defined by a small document (a YAML file or the browser form)::

    name: smollm-sampling
    questions: {set: quality-sample, limit: 16}      # or ids: [...]; or just the set's name
    debaters: [smollm2-embedded, smollm2-hot]         # DebaterProfile names
    protocols: [debate]                               # names in arena.engine.protocol.PROTOCOLS
    judges: [smollm2-judge]                           # JudgeProfile names: one AI verdict each
    limits: {rounds: 2, max_tokens: 160, word_limit: 120, context_tokens: 600}
    seed: 0
    chunk_size: 8                                     # debates per worker task (one lockstep batch)

:func:`validate` checks it against the database and reports every problem at once
(:class:`TournamentConfigError`). :func:`plan` expands it: for a two-debater protocol every
unordered pair of distinct debaters meets on every question with both side assignments (each
debater argues the right and the wrong answer) and both answer orders for the judge; a
one-speaker protocol (consultancy) gives each debater both sides and both orders; a protocol in
which nobody speaks (naive, expert judge) gives each question both orders. The order is stored in
the debate's settings as ``shown_first`` and copied into every AI verdict. Who speaks first in
each round (``Debate.first_side``) is drawn from each debate's seed at creation, independently.

Each planned debate has a ``tournament_key``; the unique constraint on (tournament, key) makes
creation idempotent. Debate seeds derive from the tournament seed and the key, so a re-run of the
same definition gives the same transcripts on a deterministic backend.

Running: :func:`run_chunk` runs a list of debates with the lockstep batch runner, watches the
tournament's status while they run (pause and cancel stop them within ``poll_s``; the turn in
flight is discarded, committed turns are kept), then lets every judge of the panel give its
verdict on each finished debate. Celery tasks (:mod:`arena.tournament_tasks`) and the inline
command both call it.

One module per concern: :mod:`~arena.tournaments.definition` (parse, validate, plan),
:mod:`~arena.tournaments.control` (create, start, pause, resume, cancel),
:mod:`~arena.tournaments.running` (what is left, chunks, the panel's verdicts, finishing, inline)
and :mod:`~arena.tournaments.reporting` (progress). This package re-exports what callers use.
"""

from __future__ import annotations

from arena.tournaments.control import (
    ACTIVE,
    DISPATCH_TASK,
    TournamentStateError,
    cancel,
    create_tournament,
    ensure_debates,
    pause,
    resume,
    spec_from_config,
    start,
)
from arena.tournaments.definition import (
    DEFAULT_CHUNK,
    DEFAULT_MAX_DEBATES,
    EXAMPLE,
    IMPORTED_BACKEND,
    KNOWN_KEYS,
    LIMIT_KEYS,
    QUESTION_KEYS,
    RESERVED_SETTINGS,
    PlannedDebate,
    TournamentConfigError,
    TournamentSpec,
    chooses_side,
    debate_seed,
    parse_yaml,
    plan,
    speakers,
    validate,
)
from arena.tournaments.reporting import Progress, progress
from arena.tournaments.running import (
    ChunkResult,
    ModelFactory,
    chunks,
    judge_debates,
    maybe_finish,
    panel,
    remaining_debate_ids,
    run_chunk,
    run_inline,
    tournament_status,
    unjudged_debate_ids,
)

__all__ = [
    "ACTIVE",
    "DEFAULT_CHUNK",
    "DEFAULT_MAX_DEBATES",
    "DISPATCH_TASK",
    "EXAMPLE",
    "IMPORTED_BACKEND",
    "KNOWN_KEYS",
    "LIMIT_KEYS",
    "QUESTION_KEYS",
    "RESERVED_SETTINGS",
    "ChunkResult",
    "ModelFactory",
    "PlannedDebate",
    "Progress",
    "TournamentConfigError",
    "TournamentSpec",
    "TournamentStateError",
    "cancel",
    "chooses_side",
    "chunks",
    "create_tournament",
    "debate_seed",
    "ensure_debates",
    "judge_debates",
    "maybe_finish",
    "panel",
    "parse_yaml",
    "pause",
    "plan",
    "progress",
    "remaining_debate_ids",
    "resume",
    "run_chunk",
    "run_inline",
    "speakers",
    "spec_from_config",
    "start",
    "tournament_status",
    "unjudged_debate_ids",
    "validate",
]
