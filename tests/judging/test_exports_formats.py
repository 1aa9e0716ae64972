"""Export kinds × formats × file types, loaded back with ``datasets`` and checked column by column;
filters, splits, the dataset card and the errors a researcher gets for a bad request."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from judging.exports import (
    FORMATS,
    KINDS,
    ExportError,
    ExportRequest,
    columns,
    hh_transcript,
    render_prompt,
    run_export,
    split_of,
)

SOURCE = (
    "The lighthouse keeper rowed out at dawn. He found the lamp shattered and the logbook missing. "
    "Nobody on the island had a key to the tower except the keeper himself and his sister Mara."
)
SECRET_SENTENCE = "Nobody on the island had a key to the tower"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    debates: list = field(default_factory=list)  # type: ignore[type-arg]
    verdicts: list = field(default_factory=list)  # type: ignore[type-arg]
    turns: list = field(default_factory=list)  # type: ignore[type-arg]
    tournament: object = None
    constitution_v2: object = None


def _speech(side: int, rnd: int, quote: str) -> str:
    return f"Side {side} round {rnd} argues. <quote>{quote}</quote> Therefore my answer holds."


def build_world(n_questions: int = 10) -> World:
    """Finished two-round debates on distinct questions, each judged by an AI; the first also by
    two humans who disagree; best-of-N candidates on every turn and a revision on every first turn."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from arena.constitution import default_constitution
    from arena.models import Candidate, Constitution, Debate, Question, QuestionSet, Revision, Tournament, Turn
    from arena.roles import ensure_groups
    from debaters.models import DebaterProfile
    from debaters.quotes import SourceIndex, check_quotes
    from judging.models import JudgeProfile, Verdict

    ensure_groups()
    users = get_user_model()
    humans = []
    for name in ("judge-one", "judge-two"):
        user = users.objects.create_user(username=name, password="x-long-password")
        user.groups.add(Group.objects.get(name="judge"))
        humans.append(user)
    qset = QuestionSet.objects.create(name="export-set", licence="CC-BY-4.0")
    a = DebaterProfile.objects.create(name="deb-a", backend="transformers", model="embedded")
    b = DebaterProfile.objects.create(name="deb-b", backend="openai", model="big-model")
    ai = JudgeProfile.objects.create(name="ai-judge", backend="transformers", model="embedded", prompt_version="v3")
    constitution = default_constitution()
    v2 = Constitution.objects.create(name=constitution.name, version=constitution.version + 1, principles=[], rules={})
    tournament = Tournament.objects.create(name="cup", config={})
    index = SourceIndex(SOURCE)
    world = World(tournament=tournament, constitution_v2=v2)
    now = timezone.now()
    for i in range(n_questions):
        q = Question.objects.create(
            question_set=qset, external_id=f"q-{i}", question=f"Who broke the lamp ({i})?",
            answers=["The keeper", "Mara"], correct_index=i % 2, source_title="Lighthouse", source_text=SOURCE,
            licence="CC-BY-4.0",
        )  # fmt: skip
        debate = Debate.objects.create(
            question=q, protocol="debate", settings={"rounds": 2}, constitution=v2 if i == 9 else constitution,
            debater_a=a, debater_b=b, status=Debate.Status.FINISHED, seed=i,
            tournament=tournament if i < 3 else None, tournament_key=f"k{i}" if i < 3 else "",
        )  # fmt: skip
        world.debates.append(debate)
        for index_, (rnd, side) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1)]):
            # Side 0 quotes the text exactly; side 1 invents a quote.
            quote = "found the lamp shattered" if side == 0 else "the sister confessed at once"
            text = _speech(side, rnd, quote)
            prompt = [
                {"role": "system", "content": f"You defend answer {side + 1}. Excerpts: {SOURCE}"},
                {"role": "user", "content": f"Round {rnd}: give your speech."},
            ]
            turn = Turn.objects.create(
                debate=debate, index=index_, round=rnd, side=side, text=text,
                quotes=[c.to_dict() for c in check_quotes(text, index)], prompt=prompt, prompt_hash=f"h{index_}",
                started_at=now, finished_at=now, model_name="",
                violations=[{"rule": "word_limit", "message": "speech over the word limit"}] if index_ == 3 else [],
            )  # fmt: skip
            world.turns.append(turn)
            for c, score in enumerate((0.7, 0.4, 0.55)):
                Candidate.objects.create(
                    turn=turn, index=c, text=f"Candidate {c} of turn {turn.pk}.", score=score, chosen=c == 0
                )
            if index_ == 0:
                Revision.objects.create(
                    turn=turn, step=0, draft="Draft: the keeper did it, trust me.", principle_id="quote-verbatim",
                    principle="Quote the text word for word.", critique="The draft quotes nothing.",
                    revision="Revised: <quote>found the lamp shattered</quote>, so the keeper did it.",
                    prompt=[] if i % 2 else [{"role": "user", "content": "Revision prompt."}],
                )  # fmt: skip
        world.verdicts.append(
            Verdict.objects.create(
                debate=debate,
                kind=Verdict.Kind.AI,
                ai_judge=ai,
                judge_label=ai.label,
                shown_first=i % 2,
                p_a=0.8 if i % 3 else 0.35,
                p_b=0.2 if i % 3 else 0.65,
                reason="" if i % 2 else "Verified quotes.",
                correct=(0 if i % 3 else 1) == i % 2,
            )  # fmt: skip
        )
    first = world.debates[0]
    for user, p_a, shown in ((humans[0], 0.9, 0), (humans[1], 0.3, 1)):
        world.verdicts.append(
            Verdict.objects.create(
                debate=first,
                kind=Verdict.Kind.HUMAN,
                judge=user,
                shown_first=shown,
                p_a=p_a,
                p_b=1 - p_a,
                reason="The verified quote settles it.",
                time_spent_s=42.0,
                correct=p_a > 0.5,
            )  # fmt: skip
        )
    return world


@pytest.fixture
def world(db: None) -> World:
    return build_world()


def _load(path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    import datasets

    datasets.disable_progress_bars()
    loader = "json" if path.suffix == ".jsonl" else "parquet"
    return datasets.load_dataset(loader, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def _is_messages(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in value)
    )


def _check_types(ds, kind: str, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """Every declared column is there, in order, and every value has the declared type."""
    declared = columns(kind, fmt)
    assert ds.column_names == [name for name, _, _ in declared]
    nullable = {"tournament_id", "shown_first", "time_spent_s"}
    for name, type_, _ in declared:
        for value in ds[name]:
            if value is None:
                assert name in nullable, f"{name} is null"
                continue
            if type_ == "messages":
                assert _is_messages(value), f"{name}: {value!r}"
            elif type_ == "str":
                assert isinstance(value, str), f"{name}: {value!r}"
            elif type_ == "int":
                assert isinstance(value, int) and not isinstance(value, bool), f"{name}: {value!r}"
            elif type_ == "float":
                assert isinstance(value, float | int) and not isinstance(value, bool), f"{name}: {value!r}"
            elif type_ == "bool":
                assert isinstance(value, bool), f"{name}: {value!r}"
            elif type_ == "ints":
                assert isinstance(value, list) and all(isinstance(v, int) for v in value), f"{name}: {value!r}"


def _check_provenance(ds, world: World) -> None:  # type: ignore[no-untyped-def]
    by_id = {d.pk: d for d in world.debates}
    for row in ds:
        debate = by_id[row["debate_id"]]
        assert row["question_id"] == debate.question.external_id
        assert row["protocol"] == "debate"
        assert row["constitution"] == debate.constitution.label
        assert row["tournament_id"] == debate.tournament_id
        assert (row["debater_a_model"], row["debater_b_model"]) == ("transformers/embedded", "openai/big-model")
        assert row["source_licence"] == "CC-BY-4.0"
        if "judge_id" in row and row["judge_kind"] != "ai":
            assert row["judge_id"].startswith("judge-") and "judge-one" not in row["judge_id"]


def _check_format(ds, kind: str, fmt: str) -> None:  # type: ignore[no-untyped-def]
    for row in ds:
        if fmt == "conversational":
            assert row["prompt"][-1]["role"] == "user"
            assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
            assert row["chosen"] != row["rejected"]
        elif fmt == "standard":
            assert row["prompt"] and row["chosen"] and row["rejected"] and row["chosen"] != row["rejected"]
        elif fmt == "reward":
            assert row["chosen"][:-1] == row["rejected"][:-1] and len(row["chosen"]) >= 2
            assert row["chosen"][-1]["role"] == "assistant" and row["chosen"][-1] != row["rejected"][-1]
            assert row["margin"] > 0
        elif fmt == "hh-rlhf":
            for text in (row["chosen"], row["rejected"]):
                assert text.startswith("\n\nHuman: ")
            head_c, last_c = row["chosen"].rsplit("\n\nAssistant: ", 1)
            head_r, last_r = row["rejected"].rsplit("\n\nAssistant: ", 1)
            assert head_c == head_r and last_c != last_r
        elif fmt in ("unpaired", "unpaired-standard"):
            assert isinstance(row["label"], bool)
            if kind != "judgments":
                assert row["label"] == (row["completion_is"] == "chosen")
    if fmt in ("unpaired", "unpaired-standard") and kind != "judgments":
        assert sorted(set(ds["label"])) == [False, True]


COMBOS = [(k, f) for k in KINDS for f in FORMATS if not (k == "judgments" and not f.startswith("unpaired"))
          and not (k == "revisions" and f == "reward")]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("kind, fmt", COMBOS)
def test_it_writes_every_kind_and_format_that_datasets_loads(world: World, tmp_path: Path, kind: str, fmt: str) -> None:
    for file_format in ("jsonl", "parquet"):
        out = tmp_path / f"{kind}-{fmt}-{file_format}"
        result = run_export(ExportRequest(kind=kind, format=fmt, file_format=file_format), out)

        ds = _load(result.path, tmp_path)

        assert ds.num_rows == result.rows > 0
        _check_types(ds, kind, fmt)
        _check_provenance(ds, world)
        _check_format(ds, kind, fmt)


def _rows(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _export(tmp_path: Path, name: str, **kw: object) -> list[dict]:  # type: ignore[type-arg]
    return _rows(run_export(ExportRequest(**kw), tmp_path / name).path)  # type: ignore[arg-type]


@pytest.mark.django_db
def test_arguments_aggregate_the_judges_of_a_debate(world: World, tmp_path: Path) -> None:
    rows = {r["debate_id"]: r for r in _export(tmp_path, "agg")}
    first = world.debates[0]

    row = rows[first.pk]

    # AI 0.35, humans 0.9 and 0.3 for answer 1: mean 0.5167 against 0.4833.
    assert row["n_judges"] == 3
    assert row["p_chosen"] == pytest.approx((0.35 + 0.9 + 0.3) / 3, abs=1e-6)
    assert row["margin"] == pytest.approx(abs((0.35 + 0.9 + 0.3) - (0.65 + 0.1 + 0.7)) / 3, abs=1e-6)
    assert row["chosen_side"] == 0 and row["chosen_answer"] == "The keeper"
    assert row["agreement"] == pytest.approx(1 / 3, abs=1e-6)
    assert row["judge_kind"] == "mixed"
    assert len(row["verdict_ids"]) == 3 and row["verdict_id"] == min(row["verdict_ids"])
    assert len(row["judge_id"].split(",")) == 3
    assert row["shown_first"] is None
    assert row["chosen"][0]["content"].startswith("Side 0 round 1 argues.")
    assert "Side 0 round 2" in row["chosen"][0]["content"] and "Side 1" not in row["chosen"][0]["content"]
    assert len(rows) == len(world.debates)


@pytest.mark.django_db
def test_arguments_keep_one_row_per_verdict_on_request(world: World, tmp_path: Path) -> None:
    rows = _export(tmp_path, "per", per_verdict=True)

    assert len(rows) == len(world.verdicts)
    first = [r for r in rows if r["debate_id"] == world.debates[0].pk]
    assert sorted(r["chosen_side"] for r in first) == [0, 1, 1]
    assert {r["n_judges"] for r in first} == {3}
    assert len({r["judge_id"] for r in first}) == 3
    assert all(len(r["verdict_ids"]) == 1 for r in rows)


@pytest.mark.django_db
def test_judgments_show_what_the_judge_saw_and_never_the_source(world: World, tmp_path: Path) -> None:
    from judging.models import Verdict

    rows = _export(tmp_path, "judg", kind="judgments", format="unpaired")

    assert len(rows) == len(world.verdicts)
    for row in rows:
        verdict = Verdict.objects.select_related("debate__question").get(pk=row["verdict_id"])
        answers = verdict.debate.question.answers
        user = row["prompt"][-1]["content"]
        system = row["prompt"][0]["content"]
        assert SECRET_SENTENCE not in user + system
        assert f"A: {answers[verdict.shown_first]}\n\nB: {answers[1 - verdict.shown_first]}" in user
        assert '[verified quote] "found the lamp shattered"' in user
        assert '[unverified quote] "the sister confessed at once"' in user
        assert "<quote>" not in user
        assert "[referee] speech over the word limit" in user
        assert user.index("round 1") < user.index("round 2")
        assert user.endswith("Reply with its letter, your probability that it is correct, and your reason.")
        # AI judges are prompted with the constitution's principles; humans were not shown them.
        principles = [p["id"] for p in verdict.debate.constitution.principles]
        if verdict.kind == "ai" and principles:
            assert all(f"[{pid}]" in system for pid in principles)
        if verdict.kind == "human":
            assert "Principles" not in system
        completion = row["completion"][0]["content"]
        winner = 0 if verdict.p_a > verdict.p_b else 1
        letter = "A" if winner == verdict.shown_first else "B"
        assert completion.startswith(f"Answer: {letter} (probability {max(verdict.p_a, verdict.p_b):.2f})")
        assert ("Reason: " in completion) == bool(verdict.reason)
        assert row["label"] is verdict.correct
        assert row["judge_correct"] is verdict.correct
        assert (row["p_a"], row["p_b"]) == pytest.approx((verdict.p_a, verdict.p_b))


@pytest.mark.django_db
def test_turns_pair_the_best_and_worst_candidate_for_the_turn_prompt(world: World, tmp_path: Path) -> None:
    from arena.models import Turn

    rows = _export(tmp_path, "turns", kind="turns")

    assert len(rows) == len(world.turns)
    for row in rows:
        turn = Turn.objects.get(pk=row["turn_id"])
        assert row["prompt"] == turn.prompt
        assert row["chosen"][0]["content"] == f"Candidate 0 of turn {turn.pk}."
        assert row["rejected"][0]["content"] == f"Candidate 1 of turn {turn.pk}."
        assert (row["chosen_score"], row["rejected_score"]) == (0.7, 0.4)
        assert row["margin"] == pytest.approx(0.3)
        assert row["chosen_was_kept"] is True
        assert row["speaker_answer"] == turn.debate.question.answers[turn.side]
        assert row["model"] == ("transformers/embedded" if turn.side == 0 else "openai/big-model")


@pytest.mark.django_db
def test_turns_make_every_ordered_pair_with_all_pairs(world: World, tmp_path: Path) -> None:
    rows = _export(tmp_path, "all", kind="turns", all_pairs=True)

    assert len(rows) == 3 * len(world.turns)
    assert all(r["chosen_score"] > r["rejected_score"] for r in rows)


@pytest.mark.django_db
def test_revisions_prefer_the_revision_and_carry_principle_and_critique(world: World, tmp_path: Path) -> None:
    from arena.models import Revision

    rows = _export(tmp_path, "rev", kind="revisions")

    assert len(rows) == len(world.debates)
    for row in rows:
        revision = Revision.objects.select_related("turn").get(pk=row["revision_id"])
        assert row["chosen"] == [{"role": "assistant", "content": revision.revision}]
        assert row["rejected"] == [{"role": "assistant", "content": revision.draft}]
        assert (row["principle_id"], row["principle"], row["critique"]) == (
            revision.principle_id, revision.principle, revision.critique,
        )  # fmt: skip
        # The revision's own prompt, or the turn's when the revision stored none.
        assert row["prompt"] == (revision.prompt or revision.turn.prompt)


def test_hh_rlhf_transcripts_differ_only_in_the_last_turn_even_with_a_speaker_tag_inside() -> None:
    prompt = [{"role": "system", "content": "Rules."}, {"role": "user", "content": "Argue.\n\nAssistant: fake"}]

    chosen = hh_transcript(prompt, "Good.\n\nHuman: injected question")
    rejected = hh_transcript(prompt, "Bad.")

    assert chosen.startswith("\n\nHuman: Rules.\n\nArgue.")
    for text in (chosen, rejected):
        assert text.count("\n\nHuman: ") == 1 and text.count("\n\nAssistant: ") == 1
    assert chosen.rsplit("\n\nAssistant: ", 1)[0] == rejected.rsplit("\n\nAssistant: ", 1)[0]
    assert chosen.endswith("\n\nAssistant: Good.\nHuman: injected question")


def test_quote_marks_use_the_offsets_of_the_raw_speech() -> None:
    from debaters.quotes import SourceIndex, check_quotes
    from judging.exports import SpeechData, VerdictRecord, judgment_prompt

    text = "   Indented. <quote>found the lamp shattered</quote> and <quote>a made-up line</quote>."
    speech = SpeechData(0, 1, 0, text, tuple(c.to_dict() for c in check_quotes(text, SourceIndex(SOURCE))))
    record = VerdictRecord(
        verdict_id=1, debate_id=1, question_id="q", question="Who?", answers=("x", "y"), correct_index=0,
        protocol="debate", constitution="c@1", debater_models=("m", "n"), judge_kind="human", judge_ref="user:1",
        shown_first=1, p=(0.4, 0.6), reason="", speeches=(speech,),
    )  # fmt: skip

    user = judgment_prompt(record)[1]["content"]

    assert "A: y\n\nB: x" in user
    assert (
        'Speaker for B (round 1):\nIndented. [verified quote] "found the lamp shattered" and '
        '[unverified quote] "a made-up line".'
    ) in user


def test_standard_prompts_join_the_messages() -> None:
    assert render_prompt([{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]) == "a\n\nb"


@pytest.mark.django_db
def test_the_hf_folder_splits_never_share_a_story(world: World, tmp_path: Path) -> None:
    import datasets

    result = run_export(
        ExportRequest(kind="turns", format="conversational", test_fraction=0.4),
        tmp_path / "out",
        hf_dir=tmp_path / "hf",
    )

    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    # Splits are by story (tests/judging/test_story_splits.py): this world's questions share one.
    train, test = set(dd["train"]["story_id"]), set(dd["test"]["story_id"])
    assert len(train | test) == 1 and not train & test
    assert dd["train"].num_rows + dd["test"].num_rows == result.rows
    assert result.splits == {"train": dd["train"].num_rows, "test": dd["test"].num_rows}
    assert all(split_of(q, 0.4) == "test" for q in test)
    assert (tmp_path / "hf" / "README.md").exists()
    assert dd["train"].column_names == [c for c, _, _ in columns("turns", "conversational")]


@pytest.mark.django_db
def test_parquet_is_written_in_row_groups_from_the_streamed_chunks(world: World, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from judging.exports import writers

    monkeypatch.setattr(writers, "ROW_GROUP", 8)
    result = run_export(ExportRequest(kind="turns", file_format="parquet"), tmp_path / "pq", chunk=6)

    meta = pq.ParquetFile(result.path).metadata
    assert meta.num_rows == len(world.turns) and meta.num_row_groups >= 4


@pytest.mark.django_db
def test_the_card_describes_the_data(world: World, tmp_path: Path) -> None:
    result = run_export(ExportRequest(kind="judgments", format="unpaired", judge="ai"), tmp_path / "card")

    card = (tmp_path / "card" / "README.md").read_text(encoding="utf-8")

    assert card.startswith("---\nlicense: cc-by-4.0\n")
    assert f"- rows: {result.rows}" in card
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256
    assert f"`{result.sha256}`" in card
    for column, _, _ in columns("judgments", "unpaired"):
        assert f"| `{column}` |" in card
    assert "- judges: ai" in card
    assert f"`{world.debates[0].constitution.label}`" in card and f"`{world.constitution_v2.label}`" in card
    assert "`transformers/embedded`" in card and "`openai/big-model`" in card
    assert "`ai-judge:transformers/embedded@v3`" in card
    assert "- labels:" in card


@pytest.mark.django_db
def test_the_selection_filters(world: World, tmp_path: Path) -> None:
    n = len(world.debates)
    per = {"per_verdict": True}
    assert len(_export(tmp_path, "human", judge="human", **per)) == 2
    assert len(_export(tmp_path, "ai", judge="ai", **per)) == n
    assert len(_export(tmp_path, "tour", tournament=world.tournament.pk)) == 3
    assert len(_export(tmp_path, "v2", constitution=world.constitution_v2.label)) == 1
    assert len(_export(tmp_path, "name", constitution=world.constitution_v2.name)) == n
    future = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(ExportError, match="no verdicts match"):
        run_export(ExportRequest(since=future), tmp_path / "future")
    assert len(_export(tmp_path, "past", since=datetime.now(UTC) - timedelta(days=1))) == n


@pytest.mark.django_db
def test_the_row_filters(world: World, tmp_path: Path) -> None:
    rows = _export(tmp_path, "all-rows", per_verdict=True)
    assert {round(r["margin"], 6) for r in rows} == {0.3, 0.4, 0.6, 0.8}

    assert all(r["margin"] >= 0.5 for r in _export(tmp_path, "margin", per_verdict=True, min_margin=0.5))
    assert len(_export(tmp_path, "margin2", per_verdict=True, min_margin=0.5)) == sum(r["margin"] >= 0.5 for r in rows)
    agreed = _export(tmp_path, "agree", min_agreement=0.9)
    assert world.debates[0].pk not in {r["debate_id"] for r in agreed} and len(agreed) == len(world.debates) - 1
    correct = _export(tmp_path, "correct", correct_only=True, per_verdict=True)
    assert correct and all(r["judge_correct"] and r["chosen_is_gold"] for r in correct)
    assert len(correct) == sum(r["judge_correct"] for r in rows)
    gold = _export(tmp_path, "gold", kind="turns", correct_only=True)
    assert gold and all(r["speaker_is_gold"] for r in gold)


@pytest.mark.django_db
def test_judge_ids_are_stable_within_an_export_and_differ_across_exports(world: World, tmp_path: Path) -> None:
    one = _export(tmp_path, "one", per_verdict=True, judge="human")
    two = _export(tmp_path, "two", per_verdict=True, judge="human")
    agg = {r["verdict_id"]: r["judge_id"] for r in one}

    assert len(set(agg.values())) == 2
    assert not set(agg.values()) & {r["judge_id"] for r in two}
    stable = [_export(tmp_path, f"s{i}", per_verdict=True, judge="human", stable_judge_ids=True) for i in range(2)]
    assert [r["judge_id"] for r in stable[0]] == [r["judge_id"] for r in stable[1]]


# --- Bad requests -----------------------------------------------------------------------------------


def _command(*args: str) -> str:
    out = StringIO()
    call_command("export_preferences", *args, "--no-progress", stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    "flag, value", [("--format", "csv"), ("--kind", "debates"), ("--judge", "robot"), ("--file-format", "xml")]
)
def test_the_command_refuses_unknown_choices(tmp_path: Path, flag: str, value: str) -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        _command("--out", str(tmp_path / "x"), flag, value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "request_, message",
    [
        (ExportRequest(format="csv"), "unknown format 'csv'"),
        (ExportRequest(kind="debates"), "unknown kind 'debates'"),
        (ExportRequest(file_format="xml"), "unknown file format"),
        (ExportRequest(kind="judgments", format="conversational"), "judgments are unpaired"),
        (ExportRequest(kind="revisions", format="reward"), "revisions have no margin"),
        (ExportRequest(kind="turns", judge="human"), "scored by an AI judge"),
        (ExportRequest(kind="turns", min_agreement=0.5), "min-agreement applies to verdicts"),
        (ExportRequest(min_margin=1.5), "min-margin must be between 0 and 1"),
        (ExportRequest(constitution="arena@two"), "NAME or NAME@VERSION"),
        (ExportRequest(test_fraction=1.0), "test-fraction"),
        (ExportRequest(kind="turns", per_verdict=True), "per-verdict applies to kind arguments"),
    ],
)
def test_the_service_explains_a_bad_request(tmp_path: Path, request_: ExportRequest, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        run_export(request_, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.django_db
def test_the_command_refuses_an_empty_selection_and_leaves_no_folder(tmp_path: Path) -> None:
    for kind, message in (("turns", "no best-of-N candidates"), ("revisions", "no critique-and-revision")):
        with pytest.raises(CommandError, match=message):
            _command("--out", str(tmp_path / kind), "--kind", kind)
        assert not (tmp_path / kind).exists()


@pytest.mark.django_db
def test_rows_all_filtered_out_is_an_error_that_writes_nothing(world: World, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no rows: .* removed by the row filters"):
        _command("--out", str(tmp_path / "none"), "--kind", "turns", "--min-margin", "0.9")
    assert not (tmp_path / "none").exists()


@pytest.mark.django_db
def test_an_existing_hf_folder_is_refused_without_overwrite(world: World, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "keep.txt").write_text("precious")

    with pytest.raises(CommandError, match="not empty"):
        _command("--out", str(tmp_path / "out"), "--hf", str(hf))

    assert [p.name for p in hf.iterdir()] == ["keep.txt"] and not (tmp_path / "out").exists()
    message = _command("--out", str(tmp_path / "out"), "--hf", str(hf), "--overwrite", "--file-format", "parquet")
    assert "datasets folder" in message and (hf / "dataset_dict.json").exists()
    assert not (hf / "keep.txt").exists() and (tmp_path / "out" / "preferences.parquet").exists()


@pytest.mark.django_db
def test_the_command_applies_every_flag(world: World, tmp_path: Path) -> None:
    out = tmp_path / "flags"
    message = _command(
        "--out", str(out), "--kind", "judgments", "--format", "unpaired-standard", "--file-format", "parquet",
        "--judge", "ai", "--min-margin", "0.1", "--min-agreement", "0.0", "--constitution", "arena-default",
        "--since", "2000-01-01", "--tournament", str(world.tournament.pk), "--correct-only", "--stable-judge-ids",
    )  # fmt: skip

    ds = _load(out / "preferences.parquet", tmp_path)
    assert "rows →" in message
    assert set(ds["tournament_id"]) == {world.tournament.pk}
    assert all(ds["label"]) and set(ds["judge_kind"]) == {"ai"}
    assert all(isinstance(p, str) for p in ds["prompt"])
    card = (out / "README.md").read_text()
    for line in ("- min margin: 0.1", "- min agreement: 0.0", "- constitution: arena-default", "- since: 2000-01-01",
                 f"- tournament: {world.tournament.pk}", "- correct only: yes"):  # fmt: skip
        assert line in card


def test_since_must_be_a_date(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not an ISO date"):
        _command("--out", str(tmp_path / "x"), "--since", "yesterday")


@pytest.mark.django_db(transaction=True)
def test_the_reader_thread_writes_the_same_file_as_reading_inline(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from judging.exports import pipeline

    build_world()
    readers: list[str] = []
    real = pipeline.iter_verdict_groups

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        readers.append(threading.current_thread().name)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "iter_verdict_groups", spy)
    req = ExportRequest(kind="judgments", format="unpaired", file_format="parquet", stable_judge_ids=True)

    threaded = run_export(req, tmp_path / "thread", chunk=2, ahead=2)
    inline = run_export(req, tmp_path / "inline", chunk=2, ahead=0)

    assert readers == ["export-reader", threading.current_thread().name]
    assert threaded.rows == inline.rows > 0 and threaded.sha256 == inline.sha256


def test_an_error_in_the_reader_thread_reaches_the_caller() -> None:
    from judging.exports import read_ahead

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise RuntimeError("database went away")

    got = []
    with pytest.raises(RuntimeError, match="database went away"):
        for item in read_ahead(failing, depth=1):
            got.append(item)
    assert got == [1]


@pytest.mark.django_db
@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_a_failure_midway_leaves_the_previous_export_whole(
    world: World, tmp_path: Path, monkeypatch, file_format
) -> None:  # type: ignore[no-untyped-def]
    from judging.exports import pipeline

    out = tmp_path / "out"
    first = run_export(ExportRequest(file_format=file_format), out, hf_dir=tmp_path / "hf")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def failing(row, fmt):  # type: ignore[no-untyped-def]
        calls.append(row)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return [row]

    monkeypatch.setattr(pipeline, "to_format", failing)

    with pytest.raises(RuntimeError, match="disk full"):
        run_export(ExportRequest(file_format=file_format), out, overwrite=True, hf_dir=tmp_path / "hf", chunk=2)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert first.path.exists() and (tmp_path / "hf" / "dataset_dict.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]
