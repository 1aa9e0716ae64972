"""Row builders: records in, *canonical* rows out (pure functions, no database).

A canonical pair row is TRL's conversational preference format (``prompt``/``chosen``/``rejected``
as message lists); a canonical unpaired row is TRL's conversational unpaired format
(``prompt``/``completion``/``label``). Both carry provenance columns. docs/datasets.md says exactly
what each kind of pair and each column means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from judging.exports.records import (
    Anonymizer,
    CandidateSet,
    DebateInfo,
    Message,
    RevisionRecord,
    Row,
    SpeechData,
    VerdictRecord,
)

LETTERS = ("A", "B")


def neutral_prompt(question: str, answers: Sequence[str]) -> str:
    return (
        f"Question: {question}\nAnswer 1: {answers[0]}\nAnswer 2: {answers[1]}\n"
        "Argue for the answer that is correct according to the text."
    )


def side_argument(speeches: Sequence[SpeechData], side: int) -> str:
    """One side's full argument: all its speeches in order, separated by blank lines."""
    return "\n\n".join(s.text.strip() for s in sorted(speeches, key=lambda s: s.index) if s.side == side)


def _debate_columns_from_verdict(record: VerdictRecord) -> Row:
    return {
        "debate_id": record.debate_id,
        "question_id": record.question_id,
        "story_id": record.story_id,
        "protocol": record.protocol,
        "constitution": record.constitution,
        "tournament_id": record.tournament_id,
        "debater_a_model": record.debater_models[0],
        "debater_b_model": record.debater_models[1],
        "question_set": record.question_set,
        "source_licence": record.licence,
        "first_side": record.first_side,
    }


def _debate_columns(info: DebateInfo) -> Row:
    return {
        "debate_id": info.debate_id,
        "question_id": info.question_id,
        "story_id": info.story_id,
        "protocol": info.protocol,
        "constitution": info.constitution,
        "tournament_id": info.tournament_id,
        "debater_a_model": info.debater_models[0],
        "debater_b_model": info.debater_models[1],
        "question_set": info.question_set,
        "source_licence": info.licence,
        "first_side": info.first_side,
    }


def _pair_row(record: VerdictRecord, winner: int, margin: float, p_chosen: float) -> Row | None:
    chosen_text = side_argument(record.speeches, winner)
    rejected_text = side_argument(record.speeches, 1 - winner)
    if not chosen_text or not rejected_text:
        return None
    return {
        "prompt": [{"role": "user", "content": neutral_prompt(record.question, record.answers)}],
        "chosen": [{"role": "assistant", "content": chosen_text}],
        "rejected": [{"role": "assistant", "content": rejected_text}],
        "margin": round(margin, 6),
        "p_chosen": round(p_chosen, 6),
        "chosen_side": winner,
        "chosen_answer": record.answers[winner],
        "rejected_answer": record.answers[1 - winner],
        "chosen_model": record.debater_models[winner],
        "rejected_model": record.debater_models[1 - winner],
        "chosen_is_gold": winner == record.correct_index,
        **_debate_columns_from_verdict(record),
    }


def arguments_row(record: VerdictRecord, anonymize: Anonymizer) -> Row | None:
    """One verdict → one canonical (TRL conversational) preference pair; None when it makes none.

    ``chosen`` is the argument of the side the judge gave the higher probability. No pair comes
    from a verdict without a preference (equal probabilities) or a debate missing a side. The
    debate-level columns (``n_judges``, ``agreement``) describe this verdict alone; use
    :func:`arguments_group_rows` to fill them from all of the debate's verdicts.
    """
    winner = record.preferred
    if winner is None:
        return None
    row = _pair_row(record, winner, abs(record.p[0] - record.p[1]), record.p[winner])
    if row is None:
        return None
    row.update(
        verdict_id=record.verdict_id,
        verdict_ids=[record.verdict_id],
        n_judges=1,
        agreement=1.0,
        judge_kind=record.judge_kind,
        judge_id=anonymize(record.judge_ref),
        judge_model=record.judge_model,
        verdict_origin=record.origin,
        shown_first=record.shown_first,
        judge_correct=winner == record.correct_index,
    )
    return row


@dataclass(frozen=True)
class GroupStats:
    """Several judges on one debate: mean probabilities and how many preferred the leading answer."""

    n: int
    mean_p: tuple[float, float]
    leader: int | None  # the answer with the higher mean probability; None on a tie
    agreement: float  # share of verdicts preferring the leader (or the larger camp on a tie)


def group_stats(records: Sequence[VerdictRecord]) -> GroupStats:
    if not records:
        raise ValueError("group_stats needs at least one verdict")
    n = len(records)
    if n == 1:
        p = records[0].p
        leader = None if math.isclose(p[0], p[1], abs_tol=1e-12) else (0 if p[0] > p[1] else 1)
        return GroupStats(n=1, mean_p=p, leader=leader, agreement=0.0 if leader is None else 1.0)
    mean0 = sum(r.p[0] for r in records) / n
    mean1 = sum(r.p[1] for r in records) / n
    votes = Counter(r.preferred for r in records)
    leader = None if math.isclose(mean0, mean1, abs_tol=1e-12) else (0 if mean0 > mean1 else 1)
    agreeing = votes[leader] if leader is not None else max(votes[0], votes[1])
    return GroupStats(n=n, mean_p=(mean0, mean1), leader=leader, agreement=round(agreeing / n, 6))


def arguments_group_rows(
    records: Sequence[VerdictRecord], anonymize: Anonymizer, *, per_verdict: bool = False
) -> list[Row]:
    """One debate's verdicts → its pairs: one aggregated pair, or one pair per verdict.

    Aggregated: the probabilities are averaged over the judges and ``chosen`` is the side with the
    higher mean; ``margin`` is the difference of the means; the per-judge columns list every
    judge (``verdict_ids``), join their ids with commas (``judge_id``, ``judge_model``), say
    ``mixed`` when humans and AIs judged (``judge_kind``), and ``shown_first`` is null when the
    judges saw different orders. ``verdict_id`` is the debate's first verdict (a stable key).
    Per verdict: :func:`arguments_row` for each, with the debate's ``n_judges`` and ``agreement``.
    """
    if not records:
        return []
    if len(records) == 1:
        row = arguments_row(records[0], anonymize)
        return [row] if row is not None else []
    stats = group_stats(records)
    if per_verdict:
        rows = []
        for record in records:
            row = arguments_row(record, anonymize)
            if row is not None:
                row.update(n_judges=stats.n, agreement=stats.agreement)
                rows.append(row)
        return rows
    if stats.leader is None:
        return []
    records = sorted(records, key=lambda r: r.verdict_id)
    first = records[0]
    winner = stats.leader
    row = _pair_row(first, winner, abs(stats.mean_p[0] - stats.mean_p[1]), stats.mean_p[winner])
    if row is None:
        return []
    kinds = sorted({r.judge_kind for r in records})
    shown = {r.shown_first for r in records}
    row.update(
        verdict_id=first.verdict_id,
        verdict_ids=[r.verdict_id for r in records],
        n_judges=stats.n,
        agreement=stats.agreement,
        judge_kind=kinds[0] if len(kinds) == 1 else "mixed",
        judge_id=",".join(dict.fromkeys(anonymize(r.judge_ref) for r in records)),
        judge_model=",".join(dict.fromkeys(r.judge_model for r in records if r.judge_model)),
        verdict_origin=",".join(dict.fromkeys(r.origin for r in records)),
        shown_first=shown.pop() if len(shown) == 1 else None,
        judge_correct=winner == first.correct_index,
    )
    return [row]


ANSWER_INSTRUCTION = (
    "Which answer is correct? Reply with its letter, your probability that it is correct, and your reason."
)


def judgment_prompt(record: VerdictRecord) -> list[Message]:
    """What the judge saw, as chat messages, and never the source text.

    The AI judges' own prompt (:func:`judging.ai_judges.judge_messages`): the question, the answers
    labelled A and B in this judge's order (A = ``answers[shown_first]``), the transcript with every
    quote marked verified or unverified (:func:`judging.ai_judges.mark_quotes`) and the judge's own
    questions between rounds; the constitution's principles for AI judges, who are given them. The
    referee's findings follow the speech they concern. The closing instruction asks for the letter,
    the probability and the reason, which is what the completion holds.
    """
    from judging.ai_judges import JudgeSpeech, JudgeView, judge_messages, mark_quotes

    transcript = []
    for speech in sorted(record.speeches, key=lambda s: s.index):
        text = mark_quotes(speech.text, speech.quotes).strip()
        if speech.violations:
            text += "\n" + "\n".join(f"[referee] {v}" for v in speech.violations)
        transcript.append(JudgeSpeech(side=speech.side, round=speech.round, text=text))
    view = JudgeView(
        question=record.question,
        answers=record.answers,
        transcript=tuple(transcript),
        source=None,
        protocol=record.protocol,
        questions=tuple(sorted((q.after_round, q.text) for q in record.judge_questions)),
    )
    messages = [dict(m) for m in judge_messages(view, record.shown_first, record.judge_principles)]
    body, _, _ = messages[-1]["content"].rpartition("\n\n")
    messages[-1]["content"] = f"{body}\n\n{ANSWER_INSTRUCTION}"
    return messages  # type: ignore[return-value]


def judgment_completion(record: VerdictRecord) -> str | None:
    """The judge's answer: the letter it favoured (in its own order), that probability, its reason."""
    winner = record.preferred
    if winner is None:
        return None
    letter = LETTERS[0] if winner == record.shown_first else LETTERS[1]
    text = f"Answer: {letter} (probability {record.p[winner]:.2f})"
    if record.reason.strip():
        text += f"\nReason: {record.reason.strip()}"
    return text


def judgments_row(record: VerdictRecord, anonymize: Anonymizer, stats: GroupStats | None = None) -> Row | None:
    """One verdict → one canonical unpaired row: what the judge saw, its answer, whether it was right."""
    completion = judgment_completion(record)
    if completion is None:
        return None
    return {
        "prompt": judgment_prompt(record),
        "completion": [{"role": "assistant", "content": completion}],
        "label": record.judged_correctly,
        "margin": round(abs(record.p[0] - record.p[1]), 6),
        "verdict_id": record.verdict_id,
        "judge_kind": record.judge_kind,
        "judge_id": anonymize(record.judge_ref),
        "judge_model": record.judge_model,
        "verdict_origin": record.origin,
        "shown_first": record.shown_first,
        "p_a": record.p[0],
        "p_b": record.p[1],
        "n_judges": stats.n if stats else 1,
        "agreement": stats.agreement if stats else 1.0,
        "judge_correct": record.judged_correctly,
        "time_spent_s": record.time_spent_s,
        **_debate_columns_from_verdict(record),
    }


def _speaker_columns(info: DebateInfo, turn_id: int, turn_index: int, rnd: int, side: int, model: str) -> Row:
    return {
        "turn_id": turn_id,
        "turn_index": turn_index,
        "round": rnd,
        "side": side,
        "speaker_answer": info.answers[side],
        "speaker_is_gold": side == info.correct_index,
        "model": model,
        **_debate_columns(info),
    }


def clean_messages(messages: Iterable[object]) -> list[Message]:
    """Stored chat messages as ``{"role", "content"}`` string pairs; anything else is dropped."""
    out = []
    for m in messages:
        if isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str):
            out.append({"role": m["role"], "content": m["content"]})
    return out


def turns_rows(cs: CandidateSet, anonymize: Anonymizer, *, all_pairs: bool = False) -> list[Row]:
    """A best-of-N turn → pairs of candidates for the same prompt, ordered by the AI judge's score.

    By default one pair, best against worst; with ``all_pairs`` every pair with different scores.
    Candidates with equal scores make no pair, and neither does a turn without a stored prompt.
    """
    if not cs.prompt:
        return []
    ranked = sorted((c for c in cs.candidates if c.text.strip()), key=lambda c: (-c.score, c.index))
    if len(ranked) < 2:
        return []
    if all_pairs:
        pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :] if a.score > b.score]
    else:
        pairs = [(ranked[0], ranked[-1])] if ranked[0].score > ranked[-1].score else []
    judge_id = anonymize(f"ai:{cs.judge_model}") if cs.judge_model else ""
    rows = []
    for best, worst in pairs:
        rows.append(
            {
                "prompt": [dict(m) for m in cs.prompt],
                "chosen": [{"role": "assistant", "content": best.text}],
                "rejected": [{"role": "assistant", "content": worst.text}],
                "margin": round(best.score - worst.score, 6),
                "n_candidates": len(cs.candidates),
                "chosen_candidate": best.index,
                "rejected_candidate": worst.index,
                "chosen_score": best.score,
                "rejected_score": worst.score,
                "chosen_was_kept": best.chosen,
                "judge_kind": "ai",
                "judge_id": judge_id,
                "judge_model": cs.judge_model,
                **_speaker_columns(cs.debate, cs.turn_id, cs.turn_index, cs.round, cs.side, cs.model),
            }
        )
    return rows


def revisions_row(r: RevisionRecord, anonymize: Anonymizer) -> Row | None:
    """An SL-CAI step → chosen = the revision, rejected = the draft, for the prompt of the draft.

    No pair when the prompt is unknown or the revision leaves the draft unchanged.
    """
    if not r.prompt or not r.revision.strip() or r.revision.strip() == r.draft.strip():
        return None
    return {
        "prompt": [dict(m) for m in r.prompt],
        "chosen": [{"role": "assistant", "content": r.revision}],
        "rejected": [{"role": "assistant", "content": r.draft}],
        "revision_id": r.revision_id,
        "step": r.step,
        "principle_id": r.principle_id,
        "principle": r.principle,
        "critique": r.critique,
        **_speaker_columns(r.debate, r.turn_id, r.turn_index, r.round, r.side, r.model),
    }
