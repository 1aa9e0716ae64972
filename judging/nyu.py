"""Import of the NYU 2023 human debate release (Michael et al. 2023, "Debate Helps Supervise
Unreliable Experts"; CC-BY-4.0) into debates, turns and verdicts.

The release's format (README-upstream.md points to the Scala/TypeScript types; this reads what the
files hold):

* one JSON file per debate room: ``setup`` (rules, ``sourceMaterial.QuALITYSourceMaterial`` with the
  story as a list of text chunks in ``contents``, ``question``, ``answers``, ``correctAnswerIndex``,
  ``roles`` mapping "Debater A"/"Debater B"/"Judge" to anonymised names, ``offlineJudges``) and
  ``rounds``, a list of ``SimultaneousSpeeches`` / ``SequentialSpeeches`` (speeches keyed by the
  answer index the speaker argues, each a list of ``Text`` and ``Quote`` segments whose ``span`` is
  [begin, end) into ``contents``), ``JudgeFeedback`` (the live judge's ``distribution`` over the
  answers after each round, with a comment), ``NegotiateEnd`` and ``OfflineJudgments`` (judges who
  read the finished transcript: ``timed`` gives one judgment, ``stepped`` one per round);
* ``debates-metadata.jsonl``: one line per room of the whole release (631): ``setting.isHuman``
  (human or AI debaters), ``setting.isDebate`` (debate or consultancy), ``includedInPaper``, and the
  final result.

Folder layouts (:func:`release_layout`): the shipped sample (rooms and metadata in one folder), the
release's own ``pub/`` folder of github.com/julianmichael/debate (branch ``2023-nyu-experiments``:
``pub/debates-metadata.jsonl`` and ``pub/debates/official/*.json``), or a checkout holding ``pub/``.

The same question appears in several rooms, not always with its answers in the same order. A
question's stored order is its first room's (in file-name order), or the order of the question
already stored, or that of an identical question of another set (``Question.fingerprint``); every
room in the other order is mapped into it: its speeches' sides, every judge's probabilities (per
round too), the gold index, and ``shown_first`` (the order the room's judges saw).
``settings["nyu"]["answers_as_shown"]`` keeps the room's own order. A question that debates use is
never changed: a release that disagrees with it (other answers, gold or story) is refused, naming it.

The real release has quirks the import repairs and reports instead of refusing: a quote span that
ends past the story (``a-pail-of-air-7``) is clamped to the story's end; rooms that never finished
are kept as cancelled debates without a verdict. The same story is tokenised differently in some
rooms; stories are identified by :func:`arena.identity.story_hash`, which ignores tokenisation, and
quotes are checked against the question's stored story.

A room becomes a :class:`~arena.models.Debate` (protocol ``debate`` or ``consultancy``) on a question
of the ``nyu-debates-2023`` set whose source is the story; each speech a :class:`~arena.models.Turn`
whose quotes are rendered as ``<quote>…</quote>`` and verified like any debater's; the live judge's
final distribution a human :class:`~judging.models.Verdict` with origin ``nyu-2023`` (its per-round
distributions in ``meta["rounds"]``); each offline judge another verdict. Re-importing replaces what
an earlier import wrote and nothing else (verdicts given in the arena on these debates stay).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

from django.db import transaction
from django.utils.text import slugify

from tqdm import tqdm

from arena import identity
from arena.constitution import default_constitution
from arena.importing import (
    MAX_STORY_CHARS,
    changed_question_message,
    check_text,
    identical_elsewhere,
    in_order_of,
    reconcile,
)
from arena.models import Debate, Question, QuestionSet, Turn
from arena.tournaments import IMPORTED_BACKEND
from debaters.models import DebaterProfile
from debaters.quotes import SourceIndex, check_quotes
from judging.models import Verdict, verdict_correct

ORIGIN = "nyu-2023"
SET_NAME = "nyu-debates-2023"
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "arena" / "data" / "nyu-debates"
METADATA = "debates-metadata.jsonl"
# Where the release's rooms live under its ``pub/`` folder.
ROOMS_SUBDIR = Path("debates") / "official"
LICENCE = "CC-BY-4.0"
CITATION = 'Michael et al. 2023, "Debate Helps Supervise Unreliable Experts" (github.com/julianmichael/debate)'
CONDITIONS = ("human debate", "human consultancy", "AI debate", "AI consultancy")
# The study's headline accuracies (judges of human debaters, rooms included in the paper).
PAPER_ACCURACY = {"human debate": 0.84, "human consultancy": 0.74}


class NYUImportError(ValueError):
    """The release cannot be imported; nothing was written. ``problems`` lists (file, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("cannot import:\n" + "\n".join(f"  {f}: {why}" for f, why in problems[:50]))


@dataclass
class ImportReport:
    """What an import wrote, and what it repaired or mapped on the way (each a line for a person)."""

    debates_created: int = 0
    debates_updated: int = 0
    turns: int = 0
    verdicts: int = 0
    questions: int = 0
    unfinished: list[str] = field(default_factory=list)
    without_metadata: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    recognised: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Reading the release
# ---------------------------------------------------------------------------------------


# Some rooms hold their story as Penn-Treebank tokens ("Maitland", "'s", "-LSB-", "``") rather
# than paragraph chunks; these are joined back into ordinary text, so quotes read (and verify) the
# same whichever form a room has.
_PTB_WORDS = {"-LSB-": "[", "-RSB-": "]", "-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}", "``": '"', "''": '"'}
_NO_SPACE_BEFORE = {".", ",", ":", ";", "?", "!", "%", ")", "]", "}", "''", "...", "n't", "N'T"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "$", "#"}


def _attaches(token: str) -> bool:
    """A token written against the previous one: closing punctuation, a contraction ("'s", "n't")."""
    return token in _NO_SPACE_BEFORE or token in ("-RRB-", "-RSB-", "-RCB-") or (
        token.startswith("'") and 1 < len(token) <= 3 and token[1:].isalpha()
    )


def render_tokens(tokens: Sequence[str]) -> str:
    """Text from the release's story chunks: chunks separated by a space, ``"\\n"`` chunks as line
    breaks; Penn-Treebank tokens joined back into ordinary text."""
    out: list[str] = []
    glue = False  # the previous token opens (a bracket, an opening quote): no space after it
    for token in tokens:
        if token == "\n":
            out.append("\n")
            glue = False
            continue
        if out and not out[-1].endswith("\n") and not token.startswith((" ", "\n")) and not glue and not _attaches(token):
            out.append(" ")
        glue = token in _NO_SPACE_AFTER or token in ("-LRB-", "-LSB-", "-LCB-")
        out.append(_PTB_WORDS.get(token, token))
    text = "".join(out)
    # Chunks after a line break carry the story's indentation; a line starting with spaces reads worse.
    return "\n".join(line.strip() for line in text.split("\n"))


def render_speech(
    content: Sequence[Mapping[str, object]], tokens: Sequence[str], repairs: list[str] | None = None
) -> str:
    """A speech's segments as text; a quote span becomes ``<quote>…</quote>`` around the story's words.

    A span that ends past the story (a quirk of the real release) is clamped to the story's end and
    described in ``repairs``; one that starts past it is dropped, also described. Without a
    ``repairs`` list such spans raise ``ValueError``, as do malformed ones (negative, reversed).
    """
    parts: list[str] = []
    for segment in content:
        if "Text" in segment:
            text = segment["Text"]
            parts.append(str(text.get("text", "")) if isinstance(text, Mapping) else "")
        elif "Quote" in segment:
            quote = segment["Quote"]
            span = quote.get("span") if isinstance(quote, Mapping) else None
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(i, int) for i in span)):
                raise ValueError(f"a quote has no valid span: {quote!r}")
            begin, end = span
            if not 0 <= begin <= end:
                raise ValueError(f"quote span {span} is not a span of the story")
            if end > len(tokens):
                if repairs is None:
                    raise ValueError(f"quote span {span} is outside the story ({len(tokens)} chunks)")
                if begin >= len(tokens):
                    repairs.append(f"quote span {span} starts past the story's end ({len(tokens)} chunks): dropped")
                    continue
                repairs.append(
                    f"quote span {span} ends {end - len(tokens)} chunk(s) past the story's end ({len(tokens)} chunks): "
                    f"clamped to [{begin}, {len(tokens)}]"
                )
                end = len(tokens)
            words = " ".join(render_tokens(tokens[begin:end]).split())
            parts.append(f"<quote>{words}</quote>")
    return "".join(parts)


def release_layout(directory: Path) -> tuple[Path, Path]:
    """(folder of room files, metadata file) for any of the layouts the release comes in: the
    shipped sample's flat folder, the release's ``pub/`` folder (rooms in ``debates/official/``),
    or a folder holding ``pub/``. The metadata file may be absent."""
    for base in (directory, directory / "pub"):
        if (base / ROOMS_SUBDIR).is_dir():
            return base / ROOMS_SUBDIR, base / METADATA
    return directory, directory / METADATA


def load_metadata(directory: Path) -> dict[str, dict[str, object]]:
    """The metadata of every room of the release, by room name (empty if the file is absent)."""
    path = release_layout(directory)[1]
    if not path.is_file():
        return {}
    rooms: dict[str, dict[str, object]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NYUImportError([(f"{METADATA}:{number}", f"not valid JSON ({exc.msg})")]) from None
            if isinstance(row, dict) and isinstance(row.get("name"), str):
                rooms[row["name"]] = row
    return rooms


def condition_of(meta: Mapping[str, object]) -> dict[str, object]:
    """The room's condition from its metadata: who debated, which protocol, in the paper or not."""
    setting = meta.get("setting") if isinstance(meta.get("setting"), Mapping) else {}
    is_human = bool(setting.get("isHuman"))  # type: ignore[union-attr]
    is_debate = bool(setting.get("isDebate"))  # type: ignore[union-attr]
    return {
        "is_human": is_human,
        "is_debate": is_debate,
        "condition": f"{'human' if is_human else 'AI'} {'debate' if is_debate else 'consultancy'}",
        "included_in_paper": bool(meta.get("includedInPaper")),
        "status": next(iter(meta["status"]), "") if isinstance(meta.get("status"), Mapping) else "",
    }


def release_accuracy(directory: Path = SAMPLE_DIR, *, included_in_paper: bool | None = True) -> dict[str, tuple[int, int]]:
    """(correct, judged) per condition over the *whole release's* metadata: every completed room's
    final live judgement, whether or not its transcript is imported. A reference for the imported
    subset, which is all the analysis pages compute from stored verdicts."""
    counts: dict[str, list[int]] = {c: [0, 0] for c in CONDITIONS}
    for meta in load_metadata(directory).values():
        cond = condition_of(meta)
        if included_in_paper is not None and cond["included_in_paper"] != included_in_paper:
            continue
        status = meta.get("status")
        result = status.get("Complete", {}).get("result") if isinstance(status, Mapping) else None  # type: ignore[union-attr]
        info = result.get("judgingInfo") if isinstance(result, Mapping) else None
        if not isinstance(info, Mapping):
            continue
        final = info.get("finalJudgement")
        gold = result.get("correctAnswerIndex")  # type: ignore[union-attr]
        if not (isinstance(final, list) and len(final) == 2 and gold in (0, 1)):
            continue
        cell = counts.setdefault(str(cond["condition"]), [0, 0])
        cell[0] += int(final[gold] > final[1 - gold])
        cell[1] += 1
    return {c: (v[0], v[1]) for c, v in counts.items()}


@dataclass
class _Judgment:
    label: str
    role: str  # "live" or "offline"
    distribution: tuple[float, float]
    reason: str
    meta: dict[str, object]


@dataclass
class _Room:
    name: str
    setup: Mapping[str, object]
    tokens: list[str]
    story: str
    speeches: list[dict[str, object]]
    judgments: list[_Judgment]
    live_rounds: list[dict[str, object]]
    meta: dict[str, object]
    repairs: list[str] = field(default_factory=list)


def _text(content: object, tokens: Sequence[str], repairs: list[str]) -> str:
    return render_speech(content, tokens, repairs) if isinstance(content, list) else ""


def _distribution(value: object) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(p, (int, float)) for p in value)):
        raise ValueError(f"a judge's distribution must be two numbers, not {value!r}")
    a, b = float(value[0]), float(value[1])
    total = a + b
    if total <= 0 or a < 0 or b < 0:
        raise ValueError(f"a judge's distribution must be non-negative and not all zero: {value!r}")
    # The release stores e.g. [0.55, 0.44999999999999996]: renormalise the rounding away.
    return a / total, b / total


def parse_room(name: str, data: Mapping[str, object]) -> _Room:
    """Check and read one debate file; raises ValueError naming what is wrong."""
    setup = data.get("setup")
    if not isinstance(setup, Mapping):
        raise ValueError("no setup object")
    material = setup.get("sourceMaterial")
    quality = material.get("QuALITYSourceMaterial") if isinstance(material, Mapping) else None
    if not isinstance(quality, Mapping) or not isinstance(quality.get("contents"), list):
        raise ValueError("setup.sourceMaterial.QuALITYSourceMaterial.contents is missing")
    tokens = [str(t) for t in quality["contents"]]
    answers = setup.get("answers")
    if not (isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) and a.strip() for a in answers)):
        raise ValueError("setup.answers must be two non-empty strings")
    if setup.get("correctAnswerIndex") not in (0, 1):
        raise ValueError("setup.correctAnswerIndex must be 0 or 1")
    if not isinstance(setup.get("question"), str) or not str(setup["question"]).strip():
        raise ValueError("setup.question is missing")
    rounds = data.get("rounds")
    if not isinstance(rounds, list):
        raise ValueError("rounds must be a list")

    speeches: list[dict[str, object]] = []
    repairs: list[str] = []
    live_rounds: list[dict[str, object]] = []
    judgments: list[_Judgment] = []
    roles = setup.get("roles") if isinstance(setup.get("roles"), Mapping) else {}
    speech_round = 0
    for position, entry in enumerate(rounds):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ValueError(f"round {position} is not a single tagged object")
        kind, body = next(iter(entry.items()))
        if kind in ("SimultaneousSpeeches", "SequentialSpeeches"):
            speech_round += 1
            items = body.get("speeches") if isinstance(body, Mapping) else None
            if not isinstance(items, Mapping):
                raise ValueError(f"round {position}: speeches missing")
            for key in sorted(items, key=lambda k: int(k) if str(k).isdigit() else 99):
                if str(key) not in ("0", "1"):
                    raise ValueError(f"round {position}: speech key {key!r} is not an answer index")
                speech = items[key]
                speeches.append(
                    {
                        "round": speech_round,
                        "side": int(key),
                        "text": _text(speech.get("content"), tokens, repairs),
                        "speaker": str(speech.get("speaker", "")),
                        "timestamp": speech.get("timestamp"),
                        "kind": kind,
                    }
                )
        elif kind == "JudgeFeedback":
            feedback = body.get("feedback", {}) if isinstance(body, Mapping) else {}
            live_rounds.append(
                {
                    "after_speeches": len(speeches),
                    "after_round": speech_round,
                    "distribution": list(_distribution(body.get("distribution"))),
                    "feedback": _text(feedback.get("content"), tokens, repairs),
                    "timestamp": feedback.get("timestamp"),
                    "end_debate": bool(body.get("endDebate")),
                }
            )
        elif kind == "OfflineJudgments":
            judged = body.get("judgments", {}) if isinstance(body, Mapping) else {}
            for judge, record in sorted(judged.items()):
                steps = record.get("judgments", []) if isinstance(record, Mapping) else []
                if not steps:
                    continue
                final = steps[-1]
                feedback = final.get("feedback", {})
                judgments.append(
                    _Judgment(
                        label=str(judge),
                        role="offline",
                        distribution=_distribution(final.get("distribution")),
                        reason=_text(feedback.get("content"), tokens, repairs),
                        meta={
                            "mode": record.get("mode"),
                            "rounds": [
                                {
                                    "distribution": list(_distribution(s.get("distribution"))),
                                    "feedback": _text(s.get("feedback", {}).get("content"), tokens, repairs),
                                    "timestamp": s.get("feedback", {}).get("timestamp"),
                                }
                                for s in steps
                            ],
                            "timestamp": feedback.get("timestamp"),
                        },
                    )
                )
        elif kind == "NegotiateEnd":
            continue
        else:
            raise ValueError(f"round {position}: unknown kind {kind!r}")
    if live_rounds and live_rounds[-1]["end_debate"]:
        final = live_rounds[-1]
        judgments.insert(
            0,
            _Judgment(
                label=str(roles.get("Judge", "live judge")),  # type: ignore[union-attr]
                role="live",
                distribution=(float(final["distribution"][0]), float(final["distribution"][1])),  # type: ignore[index]
                reason=str(final["feedback"]),
                meta={"rounds": live_rounds, "num_continues": len(live_rounds) - 1, "timestamp": final["timestamp"]},
            ),
        )
    return _Room(
        name=name,
        setup=setup,
        tokens=tokens,
        story=render_tokens(tokens),
        speeches=speeches,
        judgments=judgments,
        live_rounds=live_rounds,
        meta={},
        repairs=repairs,
    )


def iter_rooms(directory: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(directory.glob("*.json")):
        yield path.stem, path


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _when(ms: object) -> datetime:
    if isinstance(ms, (int, float)) and ms > 0:
        return datetime.fromtimestamp(ms / 1000.0, tz=dt_timezone.utc)
    return datetime(2023, 1, 1, tzinfo=dt_timezone.utc)


def _profile(speaker: str, is_human: bool) -> DebaterProfile:
    """One debater profile per anonymised NYU debater (GPT-4 is one too), never runnable here."""
    name = ("nyu-" + slugify(speaker))[:100] if speaker else "nyu-unknown"
    profile, _ = DebaterProfile.objects.get_or_create(
        name=name,
        defaults={
            "description": (
                f"{'Human' if is_human else 'AI'} debater {speaker!r} of the NYU 2023 debate release "
                f"(anonymised name; imported, cannot be run). {CITATION}, {LICENCE}."
            ),
            "backend": IMPORTED_BACKEND,
            "model": speaker or "unknown",
        },
    )
    return profile


def _external_id(room: _Room) -> str:
    material = room.setup["sourceMaterial"]["QuALITYSourceMaterial"]  # type: ignore[index]
    article = str(material.get("articleId", "")) or "story"  # type: ignore[union-attr]
    question = str(room.setup["question"]).strip()
    return f"nyu-{article}-{hashlib.sha256(question.encode()).hexdigest()[:8]}"


def _room_question(room: _Room) -> dict[str, object]:
    """The question as this room states it, in the room's answer order."""
    material = room.setup["sourceMaterial"]["QuALITYSourceMaterial"]  # type: ignore[index]
    article = str(material.get("articleId", "")) or "story"  # type: ignore[union-attr]
    return {
        "question": str(room.setup["question"]).strip(),
        "answers": [str(a).strip() for a in room.setup["answers"]],  # type: ignore[union-attr]
        "correct_index": int(room.setup["correctAnswerIndex"]),  # type: ignore[call-overload]
        "source_title": str(material.get("title", "")),  # type: ignore[union-attr]
        "source_text": room.story,
        "source_origin": f"QuALITY article {article}, via the NYU 2023 debate release",
        "licence": LICENCE,
    }


@dataclass
class _Plan:
    """One question of the release and its rooms: the stored order and each room's mapping."""

    external_id: str
    fields: dict[str, object]  # in the stored order
    existing: Question | None
    rooms: list[tuple[_Room, bool]]  # (room, its answers are the stored ones reversed)
    update: bool = False


def _check_room(room: _Room) -> None:
    """Refuse what the database could not store: NUL characters, over-long titles, giant stories."""
    fields = _room_question(room)
    for name in ("question", "source_title", "source_text"):
        max_length = Question._meta.get_field(name).max_length
        check_text(str(fields[name]), f"setup {name.replace('_', ' ')}", max_length)
    for n, answer in enumerate(fields["answers"], start=1):  # type: ignore[arg-type]
        check_text(str(answer), f"setup answer {n}")
    if len(room.story) > MAX_STORY_CHARS:
        raise ValueError(f"the story is {len(room.story)} characters long; stories are limited to {MAX_STORY_CHARS}")
    for speech in room.speeches:
        check_text(str(speech["text"]), f"a speech of round {speech['round']}")


def plan_questions(
    qset: QuestionSet, rooms: Sequence[_Room], report: ImportReport
) -> tuple[list[_Plan], list[tuple[str, str]]]:
    """Group rooms by question and fix each question's stored order (see the module docstring).

    Returns the plans and the problems (file, reason): rooms that disagree about a question's gold
    answer or answers, and questions already used by debates that the release would change."""
    groups: dict[str, list[_Room]] = {}
    for room in rooms:
        groups.setdefault(_external_id(room), []).append(room)
    existing = {q.external_id: q for q in Question.objects.filter(question_set=qset, external_id__in=list(groups))}
    plans: list[_Plan] = []
    problems: list[tuple[str, str]] = []
    for ext, members in groups.items():
        first = _room_question(members[0])
        old = existing.get(ext)
        fields = dict(first)
        update = False
        if old is not None:
            changes, _ = reconcile(old, first, any_tokenisation=True)
            if changes and old.debates.exists():
                problems.append((f"{members[0].name}.json", changed_question_message(old, changes)))
                continue
            if changes:
                update = True
            else:
                fields.update(answers=list(old.answers), correct_index=old.correct_index, source_text=old.source_text)
        else:
            model = identical_elsewhere(qset, first)
            if model is not None:
                in_order_of(model, fields)
                report.recognised.append(f"{ext} is {model.question_set.name}/{model.external_id}")
        stored = [str(a) for a in fields["answers"]]  # type: ignore[union-attr]
        gold_text = stored[int(fields["correct_index"])]  # type: ignore[call-overload]
        mapped: list[tuple[_Room, bool]] = []
        for room in members:
            mine = _room_question(room)
            reversed_ = identity.answer_order(stored, mine["answers"])  # type: ignore[arg-type]
            if reversed_ is None:
                problems.append((f"{room.name}.json", f"question {ext!r} has other answers here than in {members[0].name}"))
                continue
            if stored[identity.stored_index(int(mine["correct_index"]), reversed_)] != gold_text:  # type: ignore[call-overload]
                problems.append((f"{room.name}.json", f"question {ext!r} has another gold answer here than in {members[0].name}"))
                continue
            if reversed_:
                report.reordered.append(f"{room.name} (answers in the other order than {ext}'s)")
            mapped.append((room, reversed_))
        plans.append(_Plan(ext, fields, old, mapped, update))
    return plans, problems


def _store_question(qset: QuestionSet, plan: _Plan) -> Question:
    if plan.existing is not None and not plan.update:
        return plan.existing
    if plan.existing is not None:
        for key, value in plan.fields.items():
            setattr(plan.existing, key, value)
        plan.existing.save()
        return plan.existing
    return Question.objects.create(question_set=qset, external_id=plan.external_id, **plan.fields)


def _pair(value: object, reversed_: bool) -> list[float]:
    return list(identity.in_stored_order(value, reversed_))  # type: ignore[arg-type]


def _rounds_in_stored_order(rounds: Sequence[Mapping[str, object]], reversed_: bool) -> list[dict[str, object]]:
    return [{**r, "distribution": _pair(r["distribution"], reversed_)} for r in rounds]


def _write_room(
    question: Question, room: _Room, reversed_: bool, meta: Mapping[str, object] | None, index: SourceIndex, report: ImportReport
) -> None:
    """Write one room as a debate on ``question``; ``reversed_``: the room lists the answers in the
    other order, so its sides and probabilities are mapped into the question's."""
    cond = condition_of(meta) if meta else {"is_human": True, "is_debate": len({s["side"] for s in room.speeches}) > 1}
    cond = dict(cond)
    if not meta:
        cond.setdefault("condition", f"{'human' if cond['is_human'] else 'AI'} {'debate' if cond['is_debate'] else 'consultancy'}")
        cond.setdefault("included_in_paper", False)
        report.without_metadata.append(room.name)
    roles = room.setup.get("roles") if isinstance(room.setup.get("roles"), Mapping) else {}
    # "Debater A" argues the room's answer 0, which is the stored answer 1 in a reversed room.
    speakers = {
        identity.stored_index(0, reversed_): str(roles.get("Debater A", "")),  # type: ignore[union-attr]
        identity.stored_index(1, reversed_): str(roles.get("Debater B", "")),  # type: ignore[union-attr]
    }
    is_human = bool(cond["is_human"])
    present = [s for s in (0, 1) if speakers[s]]
    profiles = {s: _profile(speakers[s], is_human) for s in present}
    a = profiles.get(0) or profiles.get(1) or _profile("", is_human)
    b = profiles.get(1) or a
    finished = bool(room.judgments)
    rules = room.setup.get("rules", {})
    shown_first = identity.stored_index(0, reversed_)  # the room's judges saw its answer 0 first
    settings = {
        "rounds": max(1, max((s["round"] for s in room.speeches), default=1)),  # type: ignore[type-var]
        "shown_first": shown_first,
        "consultant_side": present[0] if len(present) == 1 else None,
        "nyu": {
            "name": room.name,
            **cond,
            "roles": dict(roles),  # type: ignore[arg-type]
            "rules": rules,
            "story_id": room.setup["sourceMaterial"]["QuALITYSourceMaterial"].get("articleId"),  # type: ignore[index,union-attr]
            "answers_as_shown": [str(x).strip() for x in room.setup["answers"]],  # type: ignore[union-attr]
            "reversed": reversed_,
            "story_sha256": hashlib.sha256(room.story.encode()).hexdigest(),
            "repairs": list(room.repairs),
            "live_judge_rounds": _rounds_in_stored_order(room.live_rounds, reversed_) if not finished else None,
            "offline_judges": room.setup.get("offlineJudges", {}),
        },
    }
    protocol = "debate" if cond["is_debate"] else "consultancy"
    created = _when(room.setup.get("creationTime"))
    ended = _when(room.judgments[0].meta.get("timestamp")) if finished else None
    existing = Debate.objects.filter(question__question_set=question.question_set, settings__nyu__name=room.name).first()
    fields = {
        "question": question,
        "question_hash": question.content_hash(),
        "protocol": protocol,
        "settings": settings,
        "debater_a": a,
        "debater_b": b,
        "status": Debate.Status.FINISHED if finished else Debate.Status.CANCELLED,
        "error": "" if finished else "the room never finished in the NYU release",
        "started_at": created,
        "finished_at": ended,
    }
    if existing is None:
        debate = Debate.objects.create(
            constitution=default_constitution(), seed=int(hashlib.sha256(room.name.encode()).hexdigest()[:7], 16), **fields
        )
        report.debates_created += 1
    else:
        Debate.objects.filter(pk=existing.pk).update(**fields)
        debate = existing
        # What an earlier import wrote is replaced; arena verdicts on the debate are kept.
        Turn.objects.filter(debate=debate).delete()
        Verdict.objects.filter(debate=debate, origin=ORIGIN).delete()
        report.debates_updated += 1
    turns = []
    for i, speech in enumerate(room.speeches):
        text = str(speech["text"])
        when = _when(speech["timestamp"])
        turns.append(
            Turn(
                debate=debate,
                index=i,
                round=int(speech["round"]),  # type: ignore[call-overload]
                side=identity.stored_index(int(speech["side"]), reversed_),  # type: ignore[call-overload]
                text=text,
                quotes=[c.to_dict() for c in check_quotes(text, index)],
                prompt=[],
                prompt_hash="",
                model_name=f"{'human' if is_human else 'AI'} ({ORIGIN})",
                started_at=when,
                finished_at=when,
                meta={
                    "speaker": speech["speaker"], "nyu_round_kind": speech["kind"], "origin": ORIGIN,
                    "room_side": speech["side"],
                },
            )
        )
    Turn.objects.bulk_create(turns)
    report.turns += len(turns)
    gold = question.correct_index
    verdicts = []
    for judgment in room.judgments:
        p = identity.in_stored_order(judgment.distribution, reversed_)
        meta = dict(judgment.meta)
        if isinstance(meta.get("rounds"), list):
            meta["rounds"] = _rounds_in_stored_order(meta["rounds"], reversed_)  # type: ignore[arg-type]
        verdicts.append(
            Verdict(
                debate=debate,
                kind=Verdict.Kind.HUMAN,
                origin=ORIGIN,
                judge_label=judgment.label,
                shown_first=shown_first,
                p_a=p[0],
                p_b=p[1],
                reason=judgment.reason,
                correct=verdict_correct(p, gold),
                meta={"role": judgment.role, "condition": cond["condition"], **meta},
            )
        )
    Verdict.objects.bulk_create(verdicts)
    report.verdicts += len(verdicts)
    if not finished:
        report.unfinished.append(room.name)
    for repair in room.repairs:
        report.repaired.append(f"{room.name}: {repair}")


def import_release(directory: Path = SAMPLE_DIR, *, progress: bool = False) -> ImportReport:
    """Import every debate file of the release in ``directory`` (any layout of
    :func:`release_layout`), all or nothing; idempotent. Repairs what the real release needs
    (listed in the report) and refuses, naming each file, only what cannot be made sense of."""
    if not directory.is_dir():
        raise NYUImportError([(str(directory), "not a directory")])
    rooms_dir, _ = release_layout(directory)
    metadata = load_metadata(directory)
    rooms: list[_Room] = []
    problems: list[tuple[str, str]] = []
    paths = list(iter_rooms(rooms_dir))
    if not paths:
        raise NYUImportError([(str(directory), f"holds no debate files (*.json, or pub/{ROOMS_SUBDIR}/*.json)")])
    for name, path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            room = parse_room(name, data)
            _check_room(room)
            rooms.append(room)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append((path.name, str(exc)))
    if problems:
        raise NYUImportError(problems)
    report = ImportReport()
    with transaction.atomic():
        qset, _ = QuestionSet.objects.get_or_create(
            name=SET_NAME,
            defaults={
                "description": "Questions and stories of the NYU 2023 human debate release.",
                "origin": CITATION,
                "licence": LICENCE,
            },
        )
        plans, problems = plan_questions(qset, rooms, report)
        if problems:
            transaction.set_rollback(True)
            raise NYUImportError(problems)
        work = [(plan, room, reversed_) for plan in plans for room, reversed_ in plan.rooms]
        iterator: Iterable[tuple[_Plan, _Room, bool]] = work
        if progress:
            iterator = tqdm(work, unit="debate", desc="importing")
        stored: dict[str, tuple[Question, SourceIndex]] = {}
        for plan, room, reversed_ in iterator:
            if plan.external_id not in stored:
                question = _store_question(qset, plan)
                stored[plan.external_id] = (question, SourceIndex(question.source_text))
            question, index = stored[plan.external_id]
            _write_room(question, room, reversed_, metadata.get(room.name), index, report)
        report.questions = len(stored)
    return report
