"""Output formats: one canonical row → the rows of a format; the columns and Arrow schema of each."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from judging.exports.records import ExportError, Message, Row

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("conversational", "standard", "unpaired", "unpaired-standard", "reward", "hh-rlhf")
FORMAT_HELP = {
    "conversational": "TRL preference, conversational, explicit prompt: prompt/chosen/rejected as message lists",
    "standard": "TRL preference, standard, explicit prompt: prompt/chosen/rejected as strings",
    "unpaired": "TRL unpaired preference (KTO), conversational: prompt/completion as message lists, label",
    "unpaired-standard": "TRL unpaired preference (KTO), standard: prompt/completion as strings, label",
    "reward": "TRL reward data: chosen/rejected as whole conversations (implicit prompt) and margin",
    "hh-rlhf": "Anthropic hh-rlhf: chosen/rejected as '\\n\\nHuman: … \\n\\nAssistant: …' transcripts",
}


def render_prompt(messages: Sequence[Message]) -> str:
    """A message list as one string (TRL's standard format): the contents, blank-line separated."""
    return "\n\n".join(m["content"] for m in messages)


_HH_SPEAKER = re.compile(r"\n\n(?=(?:Human|Assistant):)")


def _hh_safe(text: str) -> str:
    # A speech that contains "\n\nHuman:" would split the transcript in the wrong place.
    return _HH_SPEAKER.sub("\n", text.strip())


def hh_transcript(prompt: Sequence[Message], reply: str) -> str:
    """``\\n\\nHuman: … \\n\\nAssistant: …`` with ``reply`` as the last Assistant turn.

    System messages have no place in hh-rlhf; they open the Human turn that follows them.
    """
    out: list[str] = []
    pending: list[str] = []
    for m in prompt:
        if m["role"] == "system":
            pending.append(m["content"])
        elif m["role"] == "assistant":
            if pending:
                out.append("\n\nHuman: " + _hh_safe("\n\n".join(pending)))
                pending = []
            out.append("\n\nAssistant: " + _hh_safe(m["content"]))
        else:
            out.append("\n\nHuman: " + _hh_safe("\n\n".join([*pending, m["content"]])))
            pending = []
    if pending:
        out.append("\n\nHuman: " + _hh_safe("\n\n".join(pending)))
    return "".join(out) + "\n\nAssistant: " + _hh_safe(reply)


def _text(messages: object) -> str:
    assert isinstance(messages, list)
    return "\n\n".join(m["content"] for m in messages)


def to_format(row: Row, fmt: str) -> list[Row]:
    """One canonical row → the rows of ``fmt`` (two rows for unpaired data from a pair).

    Provenance columns pass through unchanged; the writer keeps the columns of the schema.
    """
    if "completion" in row:  # canonical unpaired
        if fmt == "unpaired":
            return [row]
        if fmt == "unpaired-standard":
            return [{**row, "prompt": render_prompt(row["prompt"]), "completion": _text(row["completion"])}]  # type: ignore[arg-type]
        raise ExportError(f"unpaired data cannot be written as {fmt!r}: use unpaired or unpaired-standard")
    prompt = row["prompt"]
    assert isinstance(prompt, list)
    if fmt == "conversational":
        return [row]
    if fmt == "standard":
        return [
            {**row, "prompt": render_prompt(prompt), "chosen": _text(row["chosen"]), "rejected": _text(row["rejected"])}
        ]
    if fmt in ("unpaired", "unpaired-standard"):
        out = []
        for which, label in (("chosen", True), ("rejected", False)):
            completion: object = row[which]
            p: object = prompt
            if fmt == "unpaired-standard":
                completion, p = _text(completion), render_prompt(prompt)
            out.append({**row, "prompt": p, "completion": completion, "label": label, "completion_is": which})
        return out
    if fmt == "reward":
        return [{**row, "chosen": prompt + row["chosen"], "rejected": prompt + row["rejected"]}]  # type: ignore[operator]
    if fmt == "hh-rlhf":
        return [
            {
                **row,
                "chosen": hh_transcript(prompt, _text(row["chosen"])),
                "rejected": hh_transcript(prompt, _text(row["rejected"])),
            }
        ]
    raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


# --- Columns and schemas --------------------------------------------------------------------------

# (name, type, meaning). Types: str, int, float, bool, messages, ints (list of int).
Column = tuple[str, str, str]

FORMAT_COLUMNS: dict[str, list[Column]] = {
    "conversational": [
        ("prompt", "messages", "what the model is asked, as chat messages"),
        ("chosen", "messages", "the preferred reply (one assistant message)"),
        ("rejected", "messages", "the other reply (one assistant message)"),
    ],
    "standard": [
        ("prompt", "str", "the prompt messages' contents joined by blank lines"),
        ("chosen", "str", "the preferred reply"),
        ("rejected", "str", "the other reply"),
    ],
    "unpaired": [
        ("prompt", "messages", "what the model is asked, as chat messages"),
        ("completion", "messages", "one reply (one assistant message)"),
        ("label", "bool", "true: a desirable reply; false: an undesirable one"),
    ],
    "unpaired-standard": [
        ("prompt", "str", "the prompt messages' contents joined by blank lines"),
        ("completion", "str", "one reply"),
        ("label", "bool", "true: a desirable reply; false: an undesirable one"),
    ],
    "reward": [
        ("chosen", "messages", "the whole preferred conversation: prompt messages, then the preferred reply"),
        ("rejected", "messages", "the whole other conversation: the same prompt messages, then the other reply"),
    ],
    "hh-rlhf": [
        ("chosen", "str", "'\\n\\nHuman: … \\n\\nAssistant: …' transcript ending in the preferred reply"),
        ("rejected", "str", "the same transcript ending in the other reply"),
    ],
}

DEBATE_COLUMNS: list[Column] = [
    ("debate_id", "int", "the debate (Debate Arena id)"),
    ("question_id", "str", "the question's external id"),
    (
        "story_id",
        "str",
        "the story the question is about, the same in every question set and tokenisation (the split key)",
    ),
    ("protocol", "str", "the debate protocol (debate, consultancy, …)"),
    ("constitution", "str", "the constitution and its version, name@version"),
    ("tournament_id", "int", "the tournament the debate belongs to; null for none"),
    ("debater_a_model", "str", "backend/model of the debater of answer 1"),
    ("debater_b_model", "str", "backend/model of the debater of answer 2"),
    ("question_set", "str", "the question set (its origin and licence are in the card)"),
    ("source_licence", "str", "licence of the source text the debate is about"),
    (
        "first_side",
        "int",
        "the answer whose debater spoke first in every round (0 or 1), drawn per debate; "
        "not the order the judge was shown the answers (shown_first)",
    ),
]

_SPEAKER_COLUMNS: list[Column] = [
    ("turn_id", "int", "the turn (Debate Arena id)"),
    ("turn_index", "int", "the turn's position in its debate, from 0"),
    ("round", "int", "the round of the turn, from 1"),
    ("side", "int", "the answer the speaker argued: 0 for answer 1, 1 for answer 2"),
    ("speaker_answer", "str", "the answer the speaker argued"),
    ("speaker_is_gold", "bool", "the speaker argued the gold answer"),
    ("model", "str", "the model that spoke"),
]

_JUDGE_COLUMNS: list[Column] = [
    ("judge_kind", "str", "human or ai (mixed: an aggregate of both)"),
    ("judge_id", "str", "keyed hash of the judge, stable within this export only (comma-joined for an aggregate)"),
    ("judge_model", "str", "AI judge: name:backend/model@prompt-version; empty for humans"),
]

KIND_COLUMNS: dict[str, list[Column]] = {
    "arguments": [
        (
            "margin",
            "float",
            "|P(chosen answer) − P(rejected answer)| given by the judge (mean over judges if aggregated)",
        ),
        ("p_chosen", "float", "the probability the judge(s) gave the chosen side's answer"),
        ("chosen_side", "int", "the side of the chosen argument: 0 for answer 1, 1 for answer 2"),
        ("chosen_answer", "str", "the answer the chosen argument defends"),
        ("rejected_answer", "str", "the answer the rejected argument defends"),
        ("chosen_model", "str", "backend/model of the chosen side's debater"),
        ("rejected_model", "str", "backend/model of the rejected side's debater"),
        ("chosen_is_gold", "bool", "the chosen argument defends the gold answer"),
        ("verdict_id", "int", "the verdict (the first of the debate's verdicts if aggregated)"),
        ("verdict_ids", "ints", "every verdict behind this row"),
        ("n_judges", "int", "how many verdicts the debate has in this selection"),
        ("agreement", "float", "share of the debate's verdicts preferring the answer with the higher mean probability"),
        *_JUDGE_COLUMNS,
        (
            "verdict_origin",
            "str",
            "arena, or where an imported verdict came from (e.g. nyu-2023); comma-joined if aggregated",
        ),
        ("shown_first", "int", "the answer shown first to the judge (0 or 1); null if aggregated judges differed"),
        ("judge_correct", "bool", "the judge(s) preferred the gold answer"),
    ],
    "turns": [
        ("margin", "float", "chosen_score − rejected_score"),
        ("n_candidates", "int", "how many candidates the turn sampled"),
        ("chosen_candidate", "int", "index of the chosen candidate"),
        ("rejected_candidate", "int", "index of the rejected candidate"),
        ("chosen_score", "float", "the AI judge's probability of the speaker's answer with the chosen candidate"),
        ("rejected_score", "float", "the same with the rejected candidate"),
        ("chosen_was_kept", "bool", "the chosen candidate is the speech the debate used"),
        *_JUDGE_COLUMNS,
        *_SPEAKER_COLUMNS,
    ],
    "revisions": [
        ("revision_id", "int", "the revision (Debate Arena id)"),
        ("step", "int", "the critique-and-revision step, from 0"),
        ("principle_id", "str", "id of the constitution principle the critique applied"),
        ("principle", "str", "text of that principle"),
        ("critique", "str", "the model's critique of its draft"),
        *_SPEAKER_COLUMNS,
    ],
    "judgments": [
        ("margin", "float", "|p_a − p_b|: how sure the judge was"),
        ("verdict_id", "int", "the verdict (Debate Arena id)"),
        *_JUDGE_COLUMNS,
        ("verdict_origin", "str", "arena, or where an imported verdict came from (e.g. nyu-2023)"),
        ("shown_first", "int", "the answer shown first to the judge, labelled A (0 or 1)"),
        ("p_a", "float", "the judge's probability of answer 1"),
        ("p_b", "float", "the judge's probability of answer 2"),
        ("n_judges", "int", "how many verdicts the debate has in this selection"),
        ("agreement", "float", "share of the debate's verdicts preferring the answer with the higher mean probability"),
        (
            "judge_correct",
            "bool",
            "the judge gave the gold answer the higher probability (= label); 50/50 verdicts make no row",
        ),
        ("time_spent_s", "float", "seconds the judge spent; null when unknown"),
    ],
}

_UNPAIRED_FROM_PAIR: list[Column] = [("completion_is", "str", "chosen or rejected: which side of the pair this row is")]


def columns(kind: str, fmt: str) -> list[Column]:
    """The columns of an export, in order: the format's, then the kind's, then the debate's."""
    cols = list(FORMAT_COLUMNS[fmt])
    if fmt in ("unpaired", "unpaired-standard") and kind != "judgments":
        cols += _UNPAIRED_FROM_PAIR
    return cols + KIND_COLUMNS[kind] + DEBATE_COLUMNS


def arrow_schema(kind: str, fmt: str) -> pa.Schema:
    import pyarrow as pa

    types = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "messages": _messages_type(),
        "ints": pa.list_(pa.int64()),
    }
    return pa.schema([(name, types[t]) for name, t, _ in columns(kind, fmt)])


def _messages_type() -> pa.DataType:
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
