"""Import of the NYU 2023 debate sample shipped with the app: debates, speeches with verified quotes,
live and offline verdicts, conditions; idempotent; accuracy per condition."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from arena.models import Debate, Question, Turn
from judging import analysis
from judging.analysis import VerdictFilter
from judging.models import Verdict
from judging.nyu import ORIGIN, SAMPLE_DIR, SET_NAME, NYUImportError, import_release, release_accuracy, render_speech, render_tokens

pytestmark = pytest.mark.django_db

FILES = sorted(SAMPLE_DIR.glob("*.json"))


def _raw(name: str) -> dict:
    return json.loads((SAMPLE_DIR / f"{name}.json").read_text())


def test_the_sample_ships_with_its_attribution() -> None:
    assert len(FILES) == 12
    readme = (SAMPLE_DIR / "README.md").read_text()
    assert "CC-BY-4.0" in readme and "Michael" in readme
    assert (SAMPLE_DIR / "README-upstream.md").is_file()
    assert sum(1 for _ in (SAMPLE_DIR / "debates-metadata.jsonl").open()) == 631


def test_story_chunks_and_quote_spans_become_text() -> None:
    tokens = ["AMBITION", "\n", "By WILLIAM L.", "BADE", "\n", " the open window", "fell."]
    assert render_tokens(tokens) == "AMBITION\nBy WILLIAM L. BADE\nthe open window fell."
    speech = [{"Text": {"text": "He says "}}, {"Quote": {"span": [2, 4]}}, {"Text": {"text": "."}}]
    assert render_speech(speech, tokens) == "He says <quote>By WILLIAM L. BADE</quote>."
    with pytest.raises(ValueError):
        render_speech([{"Quote": {"span": [5, 99]}}], tokens)


def test_it_imports_debates_speeches_and_verdicts() -> None:
    report = import_release()
    assert report.debates_created == 12 and report.debates_updated == 0
    assert report.unfinished == ["atom-mystery-young-atom-detective-1"]
    debates = Debate.objects.filter(settings__nyu__isnull=False)
    assert debates.count() == 12
    assert debates.filter(protocol="consultancy").count() == 4
    assert debates.filter(status=Debate.Status.CANCELLED).count() == 1

    one = debates.get(settings__nyu__name="ambition-0")
    raw = _raw("ambition-0")
    assert one.question.question == raw["setup"]["question"]
    assert one.question.answers == raw["setup"]["answers"]
    assert one.question.correct_index == raw["setup"]["correctAnswerIndex"]
    assert "There was a thump." in one.question.source_text
    nyu = one.settings["nyu"]
    assert nyu["condition"] == "human debate" and nyu["included_in_paper"] is False
    turns = list(one.turns.order_by("index"))
    assert [(t.round, t.side) for t in turns] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert "<quote>" in turns[0].text
    quotes = [q for t in Turn.objects.filter(meta__origin=ORIGIN) for q in t.quotes]
    # The release's quotes are spans of the story itself, so nearly all verify against the question's
    # story; a few rooms tokenised the story differently ("can not" for "cannot", split words).
    assert len(quotes) > 200 and sum(q["verified"] for q in quotes) / len(quotes) > 0.97

    live = Verdict.objects.get(debate=one)
    assert live.kind == Verdict.Kind.HUMAN and live.origin == ORIGIN and live.judge is None
    assert live.judge_label == raw["setup"]["roles"]["Judge"]
    assert (live.p_a, live.p_b) == pytest.approx((0.66, 0.34))
    assert live.correct == (raw["setup"]["correctAnswerIndex"] == 0)
    assert [r["distribution"] for r in live.meta["rounds"]] == [pytest.approx(d) for d in ([0.5, 0.5], [0.55, 0.45], [0.66, 0.34])]
    assert live.meta["role"] == "live"

    offline = Verdict.objects.filter(debate__settings__nyu__name="ambition-3")
    assert sorted(v.judge_label for v in offline) == ["Elmo Eggplant", "Snicker Snoodle"]
    assert {v.meta["role"] for v in offline} == {"offline"}
    stepped = offline.get(judge_label="Elmo Eggplant")
    assert stepped.meta["mode"] == "stepped" and len(stepped.meta["rounds"]) == 3
    assert Verdict.objects.filter(origin=ORIGIN).count() == report.verdicts == 14


def test_reimporting_changes_nothing_and_keeps_arena_verdicts(bob) -> None:  # type: ignore[no-untyped-def]
    import_release()
    pks = set(Debate.objects.filter(settings__nyu__isnull=False).values_list("pk", flat=True))
    turns = Turn.objects.count()
    debate = Debate.objects.get(settings__nyu__name="ambition-1")
    Verdict.objects.create(debate=debate, kind=Verdict.Kind.HUMAN, judge=bob, shown_first=1, p_a=0.3, p_b=0.7, correct=False)
    report = import_release()
    assert report.debates_created == 0 and report.debates_updated == 12
    assert set(Debate.objects.filter(settings__nyu__isnull=False).values_list("pk", flat=True)) == pks
    assert Turn.objects.count() == turns
    assert Verdict.objects.filter(origin=ORIGIN).count() == 14
    assert Verdict.objects.filter(judge=bob, debate=debate).exists()


def test_a_broken_file_imports_nothing(tmp_path: Path) -> None:
    shutil.copy(SAMPLE_DIR / "ambition-0.json", tmp_path / "ambition-0.json")
    broken = _raw("ambition-1")
    broken["rounds"][1]["SimultaneousSpeeches"]["speeches"]["0"]["content"].append({"Quote": {"span": [10, 4]}})
    (tmp_path / "ambition-1.json").write_text(json.dumps(broken))
    with pytest.raises(NYUImportError) as info:
        import_release(tmp_path)
    assert "ambition-1.json" in str(info.value) and "not a span of the story" in str(info.value)
    assert not Debate.objects.exists()
    with pytest.raises(NYUImportError):
        import_release(tmp_path / "missing")


def _pub_layout(tmp_path: Path) -> Path:
    """The shipped rooms in the release's own layout: pub/debates-metadata.jsonl, pub/debates/official/."""
    rooms = tmp_path / "pub" / "debates" / "official"
    rooms.mkdir(parents=True)
    for path in FILES:
        shutil.copy(path, rooms / path.name)
    shutil.copy(SAMPLE_DIR / "debates-metadata.jsonl", tmp_path / "pub" / "debates-metadata.jsonl")
    return tmp_path / "pub"


def test_a_quote_span_past_the_story_end_is_clamped_and_reported(tmp_path: Path) -> None:
    """The release's a-pail-of-air-7 quotes chunks [6926, 6929) of a 6927-chunk story: the span is
    clamped, the import goes on, and the report (and the debate) say so."""
    pub = _pub_layout(tmp_path)
    room = _raw("ambition-2")
    chunks = len(room["setup"]["sourceMaterial"]["QuALITYSourceMaterial"]["contents"])
    opening = next(r for r in room["rounds"] if "SimultaneousSpeeches" in r)
    speech = opening["SimultaneousSpeeches"]["speeches"]["0"]["content"]
    speech.append({"Quote": {"span": [chunks - 1, chunks + 2]}})
    speech.append({"Quote": {"span": [chunks + 5, chunks + 9]}})
    (pub / "debates" / "official" / "ambition-2.json").write_text(json.dumps(room))

    report = import_release(pub)

    assert report.debates_created == 12
    repaired = [r for r in report.repaired if r.startswith("ambition-2:")]
    assert len(repaired) == 2
    assert f"ends 2 chunk(s) past the story's end ({chunks} chunks): clamped to [{chunks - 1}, {chunks}]" in repaired[0]
    assert "starts past the story's end" in repaired[1] and "dropped" in repaired[1]
    debate = Debate.objects.get(settings__nyu__name="ambition-2")
    assert len(debate.settings["nyu"]["repairs"]) == 2
    last_chunk = " ".join(str(room["setup"]["sourceMaterial"]["QuALITYSourceMaterial"]["contents"][-1]).split())
    first = debate.turns.get(meta__room_side=0, round=1)
    assert first.text.endswith(f"<quote>{last_chunk}</quote>")
    assert first.quotes[-1]["verified"] is True
    assert debate.question.source_text.rstrip().endswith(last_chunk)
    call_command("check_record")
    out = StringIO()
    call_command("import_nyu_debates", str(pub), "--quiet", stdout=out)
    assert "repaired:\n  ambition-2: quote span" in out.getvalue() and "clamped to" in out.getvalue()
    assert "4 room(s) list their question's answers in the other order" in out.getvalue()


def test_the_release_layout_with_unfinished_rooms_imports_and_says_so(tmp_path: Path) -> None:
    pub = _pub_layout(tmp_path)
    (pub / "debates" / "profiles.json").write_text("{}")  # the release's other files are not rooms
    report = import_release(tmp_path)  # a checkout holding pub/ works too
    assert report.debates_created == 12 and not report.without_metadata
    assert report.unfinished == ["atom-mystery-young-atom-detective-1"]
    unfinished = Debate.objects.get(settings__nyu__name="atom-mystery-young-atom-detective-1")
    assert unfinished.status == Debate.Status.CANCELLED and not unfinished.verdicts.exists()
    # Its live judge's last distribution (the room's [0.25, 0.75]) is kept, in the question's order.
    rounds = unfinished.settings["nyu"]["live_judge_rounds"]
    assert unfinished.settings["nyu"]["reversed"] is True
    assert rounds[-1]["distribution"] == pytest.approx([0.75, 0.25])
    out = StringIO()
    call_command("import_nyu_debates", str(pub), "--quiet", stdout=out)
    assert "never finished in the release" in out.getvalue() and "atom-mystery-young-atom-detective-1" in out.getvalue()


def test_accuracy_per_condition_from_the_imported_verdicts() -> None:
    import_release()
    rows = analysis.load_rows(VerdictFilter(origin=ORIGIN, role="live"))
    table = {a.key: a for a in analysis.accuracy_by_condition(rows)}
    assert set(table) == {"human debate", "human consultancy"}
    # Recomputed from the raw files: the live judge's final distribution against the gold answer.
    expected: dict[str, list[int]] = {}
    meta = {json.loads(l)["name"]: json.loads(l) for l in (SAMPLE_DIR / "debates-metadata.jsonl").open()}
    for path in FILES:
        raw = json.loads(path.read_text())
        feedback = [r["JudgeFeedback"] for r in raw["rounds"] if "JudgeFeedback" in r]
        if not feedback or not feedback[-1]["endDebate"]:
            continue
        gold = raw["setup"]["correctAnswerIndex"]
        dist = feedback[-1]["distribution"]
        cond = "human " + ("debate" if meta[path.stem]["setting"]["isDebate"] else "consultancy")
        cell = expected.setdefault(cond, [0, 0])
        cell[0] += dist[gold] > dist[1 - gold]
        cell[1] += 1
    for cond, (correct, n) in expected.items():
        assert (table[cond].correct, table[cond].n) == (correct, n)
    paper_only = analysis.accuracy_by_condition(analysis.load_rows(VerdictFilter(origin=ORIGIN, included_in_paper=True)))
    assert sum(a.n for a in paper_only) == 5  # ambition-6..9 and atom-mystery-0


def test_the_whole_release_reproduces_the_papers_headline_numbers() -> None:
    counts = release_accuracy(SAMPLE_DIR, included_in_paper=True)
    debate_correct, debate_n = counts["human debate"]
    consult_correct, consult_n = counts["human consultancy"]
    assert round(debate_correct / debate_n, 2) == 0.84
    assert round(consult_correct / consult_n, 2) == 0.74


def test_the_command_and_the_page(client, alice) -> None:  # type: ignore[no-untyped-def]
    call_command("import_nyu_debates", "--quiet")
    assert Verdict.objects.filter(origin=ORIGIN).count() == 14
    client.force_login(alice)
    html = client.get("/analysis/nyu/", {"role": "live", "paper": "yes"}).content.decode()
    assert "human consultancy" in html and "human debate" in html
    assert "84.4%" in html and "74.0%" in html  # the whole release's reference table
    assert client.get("/analysis/plot/conditions.svg", {"origin": ORIGIN}).status_code == 200


def test_exports_include_the_imported_verdicts() -> None:
    from judging.exports import iter_records

    import_release()
    records = list(iter_records(Verdict.objects.filter(origin=ORIGIN)))
    assert len(records) == 14


def _final(raw: dict) -> list[float]:
    feedback = [r["JudgeFeedback"] for r in raw["rounds"] if "JudgeFeedback" in r]
    dist = feedback[-1]["distribution"]
    return [dist[0] / sum(dist), dist[1] / sum(dist)]


REVERSED_ROOMS = {"ambition-6", "ambition-7", "ambition-8", "atom-mystery-young-atom-detective-1"}


def test_rooms_in_the_other_answer_order_are_mapped_into_the_questions_order() -> None:
    """The same question appears in several rooms with its answers in either order (ambition-1/6/7,
    ambition-3/8/9, atom-mystery-0/1). One order is stored; every room's sides, probabilities and
    gold index are mapped into it, so the probability on the gold answer is the one the judge gave."""
    report = import_release()
    assert sorted(r.split(" ")[0] for r in report.reordered) == sorted(REVERSED_ROOMS)
    for path in FILES:
        raw = _raw(path.stem)
        debate = Debate.objects.select_related("question").get(settings__nyu__name=path.stem)
        question = debate.question
        room_answers = [a.strip() for a in raw["setup"]["answers"]]
        reversed_ = path.stem in REVERSED_ROOMS
        assert question.answers == (room_answers[::-1] if reversed_ else room_answers), path.stem
        assert debate.settings["nyu"]["reversed"] is reversed_
        assert debate.settings["nyu"]["answers_as_shown"] == room_answers
        room_gold = raw["setup"]["correctAnswerIndex"]
        assert question.answers[question.correct_index] == room_answers[room_gold]
        for turn in debate.turns.all():
            assert turn.side == (1 - turn.meta["room_side"] if reversed_ else turn.meta["room_side"])
        live = debate.verdicts.filter(meta__role="live").first()
        if live is None:  # never finished, or judged offline only
            continue
        final = _final(raw)
        assert [live.p_a, live.p_b] == pytest.approx(final[::-1] if reversed_ else final)
        assert live.p_correct(question.correct_index) == pytest.approx(final[room_gold])
        assert live.correct == (final[room_gold] > final[1 - room_gold])
        assert live.shown_first == (1 if reversed_ else 0) == debate.settings["shown_first"]
        per_round = [r["distribution"] for r in live.meta["rounds"]]
        assert per_round[-1] == pytest.approx([live.p_a, live.p_b])
    # ambition-8's judge gave 0.99 to the right answer, which is the stored answer 0 here.
    eight = Verdict.objects.get(debate__settings__nyu__name="ambition-8", meta__role="live")
    assert (eight.p_a, eight.p_b, eight.correct) == (pytest.approx(0.99), pytest.approx(0.01), True)
    call_command("check_record")


def test_probabilities_on_the_gold_answer_agree_with_correct_on_the_paper_subset() -> None:
    import_release()
    rows = analysis.load_rows(VerdictFilter(origin=ORIGIN, role="live", included_in_paper=True))
    assert len(rows) == 5
    for row in rows:
        assert row.correct == (row.p_correct > 0.5)
    expected = []
    for name in ("ambition-6", "ambition-7", "ambition-8", "ambition-9", "atom-mystery-young-atom-detective-0"):
        raw = _raw(name)
        expected.append(_final(raw)[raw["setup"]["correctAnswerIndex"]])
    table = analysis.accuracy_by_condition(rows)
    n = sum(a.n for a in table)
    assert n == 5
    assert sum(a.mean_p_correct * a.n for a in table) / n == pytest.approx(sum(expected) / 5)
    assert sum(a.brier * a.n for a in table) / n == pytest.approx(sum((1 - p) ** 2 for p in expected) / 5)
    assert sum(a.correct for a in table) == sum(p > 0.5 for p in expected)


def test_a_question_already_in_another_set_is_recognised_and_keeps_its_order() -> None:
    from arena.importing import SAMPLE_SET, import_questions

    import_questions(SAMPLE_SET, "quality-sample")
    report = import_release()
    sample = Question.objects.get(question_set__name="quality-sample", external_id="quality-51274-8e30de8b")
    nyu_question = Question.objects.get(question_set__name=SET_NAME, external_id="nyu-51274-8e30de8b")
    assert nyu_question.fingerprint == sample.fingerprint and nyu_question.source_hash == sample.source_hash
    assert nyu_question.answers == sample.answers
    assert nyu_question.answers[nyu_question.correct_index] == sample.answers[sample.correct_index]
    assert any(r.startswith("nyu-51274-8e30de8b is quality-sample/quality-51274-8e30de8b") for r in report.recognised)
    # Every story of the release has the hash of the sample's copy, whatever its tokenisation.
    assert set(Question.objects.filter(question_set__name=SET_NAME).values_list("source_hash", flat=True)) <= set(
        Question.objects.filter(question_set__name="quality-sample").values_list("source_hash", flat=True)
    )
    call_command("check_record")


def test_a_reimport_that_would_change_a_used_question_is_refused_by_name(tmp_path: Path) -> None:
    import_release()
    before = Question.objects.get(external_id="nyu-51274-c4d274ec")
    for path in FILES:
        shutil.copy(path, tmp_path / path.name)
    changed = _raw("ambition-0")
    changed["setup"]["correctAnswerIndex"] = 1
    (tmp_path / "ambition-0.json").write_text(json.dumps(changed))
    with pytest.raises(NYUImportError) as info:
        import_release(tmp_path)
    message = str(info.value)
    assert "ambition-0.json" in message and "'nyu-51274-c4d274ec'" in message and "gold answer" in message
    after = Question.objects.get(pk=before.pk)
    assert (after.answers, after.correct_index) == (before.answers, before.correct_index)
    # The same rooms again, unchanged, import fine and change nothing.
    report = import_release()
    assert report.debates_updated == 12 and report.reordered
    call_command("check_record")


def test_nul_bytes_and_giant_stories_in_a_room_are_refused_by_file(tmp_path: Path) -> None:
    nul = _raw("ambition-0")
    nul["setup"]["question"] = "Where was\u0000 Maitland taken?"
    (tmp_path / "ambition-0.json").write_text(json.dumps(nul))
    giant = _raw("ambition-1")
    giant["setup"]["sourceMaterial"]["QuALITYSourceMaterial"]["contents"].append("word " * 70_000)
    (tmp_path / "ambition-1.json").write_text(json.dumps(giant))
    with pytest.raises(NYUImportError) as info:
        import_release(tmp_path)
    message = str(info.value)
    assert "ambition-0.json: setup question contains a NUL character" in message
    assert "ambition-1.json: the story is" in message and "stories are limited to 300000" in message
    assert not Debate.objects.exists()
