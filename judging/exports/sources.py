"""Sources: records streamed from the database in chunks.

One server-side cursor plus one query per chunk for the texts, so memory stays bounded whatever the
size; small tables (questions, constitutions, profiles, AI judges) are looked up once per id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from django.db.models import QuerySet

from arena.constitution import principles_text
from arena.identity import story_id
from arena.models import Candidate, Constitution, Debate, JudgeQuestion, Question, Revision, Turn
from debaters.models import DebaterProfile
from judging.exports.records import (
    CandidateData,
    CandidateSet,
    DebateInfo,
    JudgeQuestionData,
    RevisionRecord,
    SpeechData,
    VerdictRecord,
)
from judging.exports.request import ExportRequest
from judging.exports.rows import clean_messages
from judging.models import JudgeProfile, Verdict
from judging.quality import deactivated_judges, excluded_judges
from judging.studies import exposure_flags

CHUNK = 2000


@dataclass(frozen=True)
class _QuestionInfo:
    external_id: str
    question: str
    answers: tuple[str, str]
    correct_index: int
    licence: str
    question_set: str
    story_id: str


class _Lookups:
    """Small tables (questions, constitutions, profiles, AI judges) fetched once per id, in bulk."""

    MAX_QUESTIONS = 50_000

    def __init__(self) -> None:
        self.questions: dict[int, _QuestionInfo] = {}
        self.constitutions: dict[int, str] = {}
        self.principles: dict[int, str] = {}
        self.profiles: dict[int, str] = {}
        self.ai_judges: dict[int, str] = {}

    def load(
        self,
        questions: Iterable[int] = (),
        constitutions: Iterable[int] = (),
        profiles: Iterable[int] = (),
        ai_judges: Iterable[int] = (),
    ) -> None:
        missing = set(questions) - self.questions.keys()
        if missing:
            if len(self.questions) + len(missing) > self.MAX_QUESTIONS:
                self.questions.clear()  # keeps memory bounded on huge question banks
            for pk, ext, text, answers, correct, licence, set_licence, set_name, source_hash in Question.objects.filter(
                pk__in=missing
            ).values_list(
                "pk",
                "external_id",
                "question",
                "answers",
                "correct_index",
                "licence",
                "question_set__licence",
                "question_set__name",
                "source_hash",
            ):
                self.questions[pk] = _QuestionInfo(
                    ext, text, (answers[0], answers[1]), correct, licence or set_licence, set_name, story_id(source_hash)
                )
        missing = set(constitutions) - self.constitutions.keys()
        if missing:
            for constitution in Constitution.objects.filter(pk__in=missing):
                self.constitutions[constitution.pk] = constitution.label
                self.principles[constitution.pk] = principles_text(constitution)
        missing = set(profiles) - self.profiles.keys()
        if missing:
            for pk, backend, model in DebaterProfile.objects.filter(pk__in=missing).values_list(
                "pk", "backend", "model"
            ):
                self.profiles[pk] = f"{backend}/{model}"
        missing = {pk for pk in ai_judges if pk is not None} - self.ai_judges.keys()
        if missing:
            for judge in JudgeProfile.objects.filter(pk__in=missing):
                self.ai_judges[judge.pk] = judge.label

    def debate_info(self, debate_id: int, row: Sequence[object]) -> DebateInfo:
        """``row`` = (question_id, protocol, constitution_id, debater_a_id, debater_b_id, tournament_id,
        first_side): :data:`_DEBATE_FIELDS`."""
        q = self.questions[row[0]]  # type: ignore[index]
        return DebateInfo(
            debate_id=debate_id,
            question_id=q.external_id,
            question=q.question,
            answers=q.answers,
            correct_index=q.correct_index,
            protocol=row[1],  # type: ignore[arg-type]
            constitution=self.constitutions[row[2]],  # type: ignore[index]
            debater_models=(self.profiles[row[3]], self.profiles[row[4]]),  # type: ignore[index]
            tournament_id=row[5],  # type: ignore[arg-type]
            licence=q.licence,
            question_set=q.question_set,
            story_id=q.story_id,
            first_side=row[6],  # type: ignore[arg-type]
        )


_DEBATE_FIELDS = (
    "question_id", "protocol", "constitution_id", "debater_a_id", "debater_b_id", "tournament_id", "first_side",
)  # fmt: skip


def _debate_filters(req: ExportRequest, prefix: str) -> dict[str, object]:
    out: dict[str, object] = {}
    constitution = req.constitution_filter()
    if constitution is not None:
        out[f"{prefix}constitution__name"] = constitution[0]
        if constitution[1] is not None:
            out[f"{prefix}constitution__version"] = constitution[1]
    if req.tournament is not None:
        out[f"{prefix}tournament_id"] = req.tournament
    return out


def verdict_queryset(judge_kind: str = "any", req: ExportRequest | None = None) -> QuerySet[Verdict]:
    """Verdicts on finished debates matching the request's selection filters."""
    req = req or ExportRequest(judge=judge_kind)
    qs = Verdict.objects.filter(debate__status=Debate.Status.FINISHED, **_debate_filters(req, "debate__"))
    if req.judge != "any":
        qs = qs.filter(kind=req.judge)
    if req.since is not None:
        qs = qs.filter(created_at__gte=req.since)
    excluded = excluded_judges()
    if excluded:
        qs = qs.exclude(judge_id__in=excluded)
    if not req.include_deactivated and req.judge != "ai":
        deactivated = deactivated_judges()
        if deactivated:
            qs = qs.exclude(judge_id__in=deactivated)
    if not req.include_flagged and req.judge != "ai":
        flagged = exposure_flags()  # over the whole record: an earlier verdict may lie outside the selection
        if flagged:
            qs = qs.exclude(pk__in=list(flagged))
    return qs.order_by("debate_id", "pk")


def candidate_queryset(req: ExportRequest) -> QuerySet[Candidate]:
    qs = Candidate.objects.filter(**_debate_filters(req, "turn__debate__"))
    if req.since is not None:
        qs = qs.filter(turn__finished_at__gte=req.since)
    return qs.order_by("turn_id", "index")


def revision_queryset(req: ExportRequest) -> QuerySet[Revision]:
    qs = Revision.objects.filter(**_debate_filters(req, "turn__debate__"))
    if req.since is not None:
        qs = qs.filter(turn__finished_at__gte=req.since)
    return qs.order_by("turn_id", "step")


def selection(req: ExportRequest) -> QuerySet[Verdict] | QuerySet[Candidate] | QuerySet[Revision]:
    if req.kind in ("arguments", "judgments"):
        return verdict_queryset(req=req)
    if req.kind == "turns":
        return candidate_queryset(req)
    return revision_queryset(req)


def empty_selection_message(req: ExportRequest) -> str:
    what = {
        "arguments": "no verdicts match: judge some finished debates first, or relax the filters",
        "judgments": "no verdicts match: judge some finished debates first, or relax the filters",
        "turns": "no best-of-N candidates match: run debates with best-of-N sampling, or relax the filters",
        "revisions": "no critique-and-revision steps match: run debates with revisions on, or relax the filters",
    }
    return what[req.kind]


def _grouped(rows: Iterable[tuple[object, ...]], key_index: int, chunk: int) -> Iterator[list[tuple[object, ...]]]:
    """Cut a stream sorted by ``row[key_index]`` into blocks of about ``chunk`` rows, never
    splitting one key's rows across blocks."""
    block: list[tuple[object, ...]] = []
    for row in rows:
        if len(block) >= chunk and row[key_index] != block[-1][key_index]:
            yield block
            block = []
        block.append(row)
    if block:
        yield block


def _ids_filter(name: str, ids: set[int]) -> dict[str, object]:
    """A range when the ids are dense (an index range scan, no long IN list to send and parse),
    else IN. Callers drop rows outside ``ids``."""
    lo, hi = min(ids), max(ids)
    if len(ids) * 2 >= hi - lo + 1:
        return {f"{name}__gte": lo, f"{name}__lte": hi}
    return {f"{name}__in": list(ids)}


_VERDICT_FIELDS = (
    "pk", "debate_id", "kind", "judge_id", "ai_judge_id", "judge_label", "shown_first", "p_a", "p_b",
    "reason", "correct", "time_spent_s", "origin",
    *(f"debate__{f}" for f in _DEBATE_FIELDS),
)  # fmt: skip
_VERDICT_DEBATE_OFFSET = len(_VERDICT_FIELDS) - len(_DEBATE_FIELDS)


def iter_verdict_groups(
    qs: QuerySet[Verdict], *, judgments: bool = False, chunk: int = CHUNK
) -> Iterator[tuple[int, list[list[VerdictRecord]]]]:
    """Stream ``(verdicts consumed, [one debate's records, …])`` blocks, in debate order.

    One server-side cursor over the verdicts, and per block one query for the speeches (with quote
    checks, referee findings and judge questions when ``judgments``).
    """
    lookups = _Lookups()
    turn_fields = ["debate_id", "index", "round", "side", "text"]
    if judgments:
        turn_fields += ["quotes", "violations"]
    ordered = qs.order_by("debate_id", "pk")  # grouping needs each debate's verdicts together
    for block in _grouped(ordered.values_list(*_VERDICT_FIELDS).iterator(chunk_size=chunk), 1, chunk):
        debate_ids = list(dict.fromkeys(row[1] for row in block))
        speeches: dict[int, list[SpeechData]] = {}
        wanted = set(debate_ids)
        for t in Turn.objects.filter(**_ids_filter("debate_id", wanted)).order_by().values_list(*turn_fields):
            if t[0] not in wanted:
                continue
            quotes: tuple[Mapping[str, object], ...] = ()
            violations: tuple[str, ...] = ()
            if judgments:
                quotes = tuple(q for q in (t[5] or ()) if isinstance(q, Mapping))
                violations = tuple(
                    str(v.get("message") or v.get("rule")) if isinstance(v, Mapping) else str(v) for v in (t[6] or ())
                )
            speeches.setdefault(t[0], []).append(SpeechData(t[1], t[2], t[3], t[4], quotes, violations))  # type: ignore[arg-type]
        asked: dict[int, list[JudgeQuestionData]] = {}
        if judgments:
            for debate_id, after, text in JudgeQuestion.objects.filter(**_ids_filter("debate_id", wanted)).values_list(
                "debate_id", "after_round", "text"
            ):
                if debate_id not in wanted:
                    continue
                asked.setdefault(debate_id, []).append(JudgeQuestionData(after, text))
        d = _VERDICT_DEBATE_OFFSET
        lookups.load(
            questions={row[d] for row in block},  # type: ignore[misc]
            constitutions={row[d + 2] for row in block},  # type: ignore[misc]
            profiles={row[d + 3] for row in block} | {row[d + 4] for row in block},  # type: ignore[operator]
            ai_judges={row[4] for row in block},  # type: ignore[misc]
        )
        groups: list[list[VerdictRecord]] = []
        current: list[VerdictRecord] = []
        infos: dict[int, DebateInfo] = {}
        for row in block:
            (pk, debate_id, kind, judge_id, ai_judge_id, judge_label, shown_first, p_a, p_b, reason, correct,
             time_spent_s, origin) = row[:d]  # fmt: skip
            info = infos.get(debate_id)  # type: ignore[arg-type]
            if info is None:
                info = infos[debate_id] = lookups.debate_info(debate_id, row[d:])  # type: ignore[arg-type,index]
            if judge_id is not None:
                ref, model = f"user:{judge_id}", ""
            elif ai_judge_id is not None:
                ref, model = f"ai:{ai_judge_id}", lookups.ai_judges.get(ai_judge_id, judge_label)  # type: ignore[arg-type]
            else:
                ref, model = f"label:{judge_label}", judge_label if kind == Verdict.Kind.AI else ""
            record = VerdictRecord(
                verdict_id=pk,  # type: ignore[arg-type]
                debate_id=debate_id,  # type: ignore[arg-type]
                question_id=info.question_id,
                question=info.question,
                answers=info.answers,
                correct_index=info.correct_index,
                protocol=info.protocol,
                constitution=info.constitution,
                debater_models=info.debater_models,
                judge_kind=kind,  # type: ignore[arg-type]
                judge_ref=ref,
                shown_first=shown_first,  # type: ignore[arg-type]
                p=(p_a, p_b),  # type: ignore[arg-type]
                reason=reason,  # type: ignore[arg-type]
                speeches=tuple(speeches.get(debate_id, ())),  # type: ignore[arg-type]
                judge_model=str(model),
                correct=correct,  # type: ignore[arg-type]
                tournament_id=info.tournament_id,
                licence=info.licence,
                question_set=info.question_set,
                story_id=info.story_id,
                first_side=info.first_side,
                origin=origin,  # type: ignore[arg-type]
                judge_principles=lookups.principles[row[d + 2]] if kind == Verdict.Kind.AI else "",  # type: ignore[index]
                time_spent_s=time_spent_s,  # type: ignore[arg-type]
                judge_questions=tuple(asked.get(debate_id, ())),  # type: ignore[arg-type]
            )
            if current and current[-1].debate_id != record.debate_id:
                groups.append(current)
                current = []
            current.append(record)
        if current:
            groups.append(current)
        yield len(block), groups


def iter_records(qs: QuerySet[Verdict], chunk: int = CHUNK) -> Iterator[VerdictRecord]:
    """Every verdict of ``qs`` as a record, in debate order, streamed in chunks."""
    for _, groups in iter_verdict_groups(qs, chunk=chunk):
        for group in groups:
            yield from group


def _turn_infos(turn_ids: Iterable[int], lookups: _Lookups) -> dict[int, tuple[DebateInfo, tuple[object, ...]]]:
    """turn id → (its debate's info, (index, round, side, model, prompt, meta))."""
    turns = {
        t[0]: t
        for t in Turn.objects.filter(pk__in=list(turn_ids)).values_list(
            "pk", "debate_id", "index", "round", "side", "model_name", "prompt", "meta"
        )
    }
    debates = {
        d[0]: d[1:]
        for d in Debate.objects.filter(pk__in={t[1] for t in turns.values()}).values_list("pk", *_DEBATE_FIELDS)
    }
    lookups.load(
        questions={d[0] for d in debates.values()},
        constitutions={d[2] for d in debates.values()},
        profiles={d[3] for d in debates.values()} | {d[4] for d in debates.values()},
    )
    out = {}
    for pk, (_, debate_id, index, rnd, side, model_name, prompt, meta) in turns.items():
        info = lookups.debate_info(debate_id, debates[debate_id])
        model = model_name or info.debater_models[side]
        out[pk] = (info, (index, rnd, side, model, prompt, meta))
    return out


def _bon_judge(meta: object) -> str:
    # The best-of-N runner records the scoring judge in Turn.meta["best_of_n"]["judge"].
    if isinstance(meta, Mapping):
        bon = meta.get("best_of_n")
        if isinstance(bon, Mapping) and bon.get("judge"):
            return str(bon["judge"])
    return ""


def iter_candidate_sets(qs: QuerySet[Candidate], chunk: int = CHUNK) -> Iterator[tuple[int, list[CandidateSet]]]:
    lookups = _Lookups()
    fields = ("turn_id", "index", "text", "score", "chosen")
    ordered = qs.order_by("turn_id", "index")
    for block in _grouped(ordered.values_list(*fields).iterator(chunk_size=chunk), 0, chunk):
        infos = _turn_infos({row[0] for row in block}, lookups)  # type: ignore[misc]
        by_turn: dict[int, list[CandidateData]] = {}
        for turn_id, index, text, score, chosen in block:
            by_turn.setdefault(turn_id, []).append(CandidateData(index, text, score, chosen))  # type: ignore[arg-type]
        sets = []
        for turn_id, candidates in by_turn.items():
            info, (index, rnd, side, model, prompt, meta) = infos[turn_id]
            sets.append(
                CandidateSet(
                    debate=info,
                    turn_id=turn_id,
                    turn_index=index,  # type: ignore[arg-type]
                    round=rnd,  # type: ignore[arg-type]
                    side=side,  # type: ignore[arg-type]
                    model=str(model),
                    prompt=tuple(clean_messages(prompt or ())),  # type: ignore[arg-type]
                    candidates=tuple(candidates),
                    judge_model=_bon_judge(meta),
                )
            )
        yield len(block), sets


def iter_revisions(qs: QuerySet[Revision], chunk: int = CHUNK) -> Iterator[tuple[int, list[RevisionRecord]]]:
    lookups = _Lookups()
    fields = ("pk", "turn_id", "step", "draft", "revision", "principle_id", "principle", "critique", "prompt")
    for block in _grouped(qs.values_list(*fields).iterator(chunk_size=chunk), 1, chunk):
        infos = _turn_infos({row[1] for row in block}, lookups)  # type: ignore[misc]
        records = []
        for pk, turn_id, step, draft, revision, principle_id, principle, critique, prompt in block:
            info, (index, rnd, side, model, turn_prompt, _) = infos[turn_id]  # type: ignore[index]
            records.append(
                RevisionRecord(
                    debate=info,
                    revision_id=pk,  # type: ignore[arg-type]
                    turn_id=turn_id,  # type: ignore[arg-type]
                    turn_index=index,  # type: ignore[arg-type]
                    round=rnd,  # type: ignore[arg-type]
                    side=side,  # type: ignore[arg-type]
                    model=str(model),
                    step=step,  # type: ignore[arg-type]
                    prompt=tuple(clean_messages(prompt or turn_prompt or ())),  # type: ignore[arg-type]
                    draft=draft,  # type: ignore[arg-type]
                    revision=revision,  # type: ignore[arg-type]
                    principle_id=principle_id,  # type: ignore[arg-type]
                    principle=principle,  # type: ignore[arg-type]
                    critique=critique,  # type: ignore[arg-type]
                )
            )
        yield len(block), records
