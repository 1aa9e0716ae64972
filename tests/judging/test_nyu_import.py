"""Import of the NYU 2023 debate sample shipped with the app: debates, speeches with verified quotes,
live and offline verdicts, conditions; idempotent; accuracy per condition."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

from arena.models import Debate, Turn
from judging import analysis
from judging.analysis import VerdictFilter
from judging.models import Verdict
from judging.nyu import ORIGIN, SAMPLE_DIR, NYUImportError, import_release, release_accuracy, render_speech, render_tokens

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
    # The release's quotes are spans of the story itself, so nearly all verify against it.
    assert len(quotes) > 200 and sum(q["verified"] for q in quotes) / len(quotes) > 0.99

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
    broken["rounds"][1]["SimultaneousSpeeches"]["speeches"]["0"]["content"].append({"Quote": {"span": [10, 999999]}})
    (tmp_path / "ambition-1.json").write_text(json.dumps(broken))
    with pytest.raises(NYUImportError) as info:
        import_release(tmp_path)
    assert "ambition-1.json" in str(info.value) and "outside the story" in str(info.value)
    assert not Debate.objects.exists()
    with pytest.raises(NYUImportError):
        import_release(tmp_path / "missing")


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
