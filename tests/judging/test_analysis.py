"""Analysis from stored verdicts: ratings recover known strengths through the database, accuracy per
protocol, calibration, biases, and the researcher pages that show them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arena.constitution import default_constitution
from arena.models import Debate, Question, Tournament
from debaters.models import DebaterProfile
from judging import analysis
from judging.analysis import VerdictFilter
from judging.models import JudgeProfile, Verdict

pytestmark = pytest.mark.django_db

TRUE = {"strong": 1.2, "good": 0.4, "fair": -0.3, "weak": -1.3}


def _other_question(question: Question) -> Question:
    return Question.objects.create(
        question_set=question.question_set, external_id="q-b", question="Who won?", answers=["Ann", "Bob"],
        correct_index=1, source_title="T", source_text="Ann met Bob. Bob won.",
    )


def _simulate(question: Question, n: int, seed: int = 0, protocol: str = "debate", right_bonus: float = 0.0) -> Tournament:
    """Debates between random pairs of four debaters, one AI verdict each, outcomes drawn from the
    Bradley–Terry model with the TRUE strengths (plus ``right_bonus`` for arguing the right answer)."""
    rng = np.random.default_rng(seed)
    questions = [question, _other_question(question)]
    profiles = {name: DebaterProfile.objects.create(name=name, backend="scripted", model=name) for name in TRUE}
    judge = JudgeProfile.objects.create(name="sim", backend="scripted", model="sim")
    tournament = Tournament.objects.create(name="sim", config={})
    constitution = default_constitution()
    names = list(TRUE)
    plans = []
    for i in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        q = questions[i % 2]
        strength_a = TRUE[names[a]] + (right_bonus if q.correct_index == 0 else 0.0)
        strength_b = TRUE[names[b]] + (right_bonus if q.correct_index == 1 else 0.0)
        a_wins = rng.random() < 1.0 / (1.0 + np.exp(strength_b - strength_a))
        plans.append((names[a], names[b], q, a_wins, int(rng.integers(2))))
    debates = Debate.objects.bulk_create(
        [
            Debate(question=q, tournament=tournament, tournament_key=f"k{i}", protocol=protocol, settings={"rounds": 1, "shown_first": o},
                   constitution=constitution, debater_a=profiles[a], debater_b=profiles[b], seed=i, status=Debate.Status.FINISHED)
            for i, (a, b, q, _, o) in enumerate(plans)
        ]
    )
    verdicts = []
    for debate, (_, _, q, a_wins, order) in zip(debates, plans):
        p_a = 0.8 if a_wins else 0.2
        verdicts.append(
            Verdict(debate=debate, kind=Verdict.Kind.AI, ai_judge=judge, judge_label=judge.label, shown_first=order,
                    p_a=p_a, p_b=1 - p_a, correct=(p_a > 0.5) == (q.correct_index == 0),
                    position_bias=0.0, meta={"by_order": [[p_a, 1 - p_a], [p_a, 1 - p_a]]})
        )
    Verdict.objects.bulk_create(verdicts)
    return tournament


def test_ratings_recover_known_strengths_from_stored_verdicts(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 1200)
    report = analysis.build_report(VerdictFilter(tournament=tournament.pk), rounds=100)
    table = report.debater_ratings
    assert [r.name for r in table.ratings] == ["strong", "good", "fair", "weak"]
    assert table.records == 1200 and table.rounds == 100
    truth = np.array(list(TRUE.values())) - np.mean(list(TRUE.values()))
    fitted = table.by_name()
    for name, true in zip(TRUE, truth):
        r = fitted[name]
        assert r.lower <= r.strength <= r.upper
        assert abs(r.strength - true) < 0.3, name
        assert r.lower - 0.1 < true < r.upper + 0.1, name
    # Intervals this far apart do not overlap: every debater gets its own rank.
    assert [r.rank for r in table.ratings] == [1, 2, 3, 4]
    assert np.mean([r.elo for r in table.ratings]) == pytest.approx(1000.0, abs=1e-6)
    # 400 Elo points are 10:1 odds.
    gap = fitted["strong"].elo - fitted["weak"].elo
    assert gap == pytest.approx(400 / np.log(10) * (fitted["strong"].strength - fitted["weak"].strength))


def test_overlapping_intervals_share_a_rank(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 40, seed=3)
    table = analysis.build_report(VerdictFilter(tournament=tournament.pk), rounds=50).debater_ratings
    assert len(table.ratings) == 4
    assert len({r.rank for r in table.ratings}) < 4


def test_arguing_the_right_answer_is_rated_separately(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 1200, seed=1, right_bonus=1.5)
    roles = analysis.build_report(VerdictFilter(tournament=tournament.pk), rounds=30).role_ratings.by_name()
    for name in TRUE:
        assert roles[f"{name} (right)"].elo > roles[f"{name} (wrong)"].elo
    # The bonus is the same for everyone: the right-minus-wrong gap is about 1.5 for each debater.
    gaps = [roles[f"{n} (right)"].strength - roles[f"{n} (wrong)"].strength for n in TRUE]
    assert np.mean(gaps) == pytest.approx(1.5, abs=0.35)


def test_self_play_and_one_speaker_protocols_are_not_rated(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 30, protocol="consultancy")
    report = analysis.build_report(VerdictFilter(tournament=tournament.pk), rounds=10)
    assert report.debater_ratings.ratings == []
    assert [a.key for a in report.accuracy_by_protocol] == ["consultancy"]


def _verdicts(question: Question, protocol: str, outcomes: list[tuple[float, int]]) -> None:
    """One debate and verdict per (p_a, shown_first)."""
    profile = DebaterProfile.objects.get_or_create(name="x", defaults={"backend": "scripted", "model": "x"})[0]
    for p_a, order in outcomes:
        debate = Debate.objects.create(question=question, protocol=protocol, settings={"rounds": 1}, constitution=default_constitution(),
                                       debater_a=profile, debater_b=profile, seed=1, status=Debate.Status.FINISHED)
        gold = question.correct_index
        probs = (p_a, 1 - p_a)
        Verdict.objects.create(debate=debate, kind=Verdict.Kind.HUMAN, shown_first=order, p_a=p_a, p_b=1 - p_a,
                               correct=probs[gold] > probs[1 - gold], origin="arena")


def test_accuracy_per_protocol_with_wilson_intervals(question) -> None:  # type: ignore[no-untyped-def]
    gold_p = 0.9 if question.correct_index == 0 else 0.1
    wrong_p = 1 - gold_p
    _verdicts(question, "debate", [(gold_p, 0)] * 16 + [(wrong_p, 0)] * 4)
    _verdicts(question, "consultancy", [(gold_p, 0)] * 6 + [(wrong_p, 0)] * 4)
    rows = analysis.load_rows()
    table = {a.key: a for a in analysis.accuracy_by_protocol(rows)}
    assert table["debate"].n == 20 and table["debate"].accuracy == pytest.approx(0.8)
    assert table["consultancy"].n == 10 and table["consultancy"].accuracy == pytest.approx(0.6)
    # Wilson 95% interval for 16/20
    assert table["debate"].lower == pytest.approx(0.5840, abs=1e-3)
    assert table["debate"].upper == pytest.approx(0.9193, abs=1e-3)
    assert table["debate"].brier == pytest.approx((16 * 0.1**2 + 4 * 0.9**2) / 20)
    # 0.8 vs 0.6 on so few verdicts: the intervals overlap, so both rank first.
    assert table["debate"].rank == table["consultancy"].rank == 1
    only = analysis.accuracy_by_protocol(analysis.load_rows(VerdictFilter(protocol="consultancy")))
    assert [a.key for a in only] == ["consultancy"]


def test_calibration_and_biases(question) -> None:  # type: ignore[no-untyped-def]
    gold = question.correct_index
    # Always 0.7 for the answer shown first: half the time that is the gold answer.
    outcomes = [(0.7, 0), (0.3, 1)] * 10
    _verdicts(question, "debate", outcomes)
    rows = analysis.load_rows()
    cal = analysis.calibration(rows)
    p_gold = [p if gold == 0 else 1 - p for p, _ in outcomes]
    assert cal.n == 20
    assert cal.brier == pytest.approx(np.mean([(1 - p) ** 2 for p in p_gold]))
    assert cal.ece == pytest.approx(0.2)
    assert sum(b.count for b in cal.bins) == 20
    assert [b.count for b in cal.bins if b.count] == [20]
    bias = analysis.biases(rows)
    assert bias.position.bias == pytest.approx(0.2)
    assert bias.side.bias == pytest.approx(0.0)


def test_ai_position_bias_is_paired_across_both_orders(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 20)
    Verdict.objects.update(meta={"by_order": [[0.9, 0.1], [0.3, 0.7]]})
    rows = analysis.load_rows(VerdictFilter(tournament=tournament.pk))
    bias = analysis.biases(rows)
    # answer 1 gets 0.9 shown first, answer 2 gets 0.7 shown first: mean 0.8, bias 0.3
    assert bias.position.bias == pytest.approx(0.3)
    assert [(j.judge, j.bias.n) for j in bias.position_by_judge] == [(rows[0].judge, 20)]
    # verdicts.csv's position_bias column is each verdict's share: its mean is the page's figure.
    header, body = analysis.verdict_table(rows)
    column = [line[header.index("position_bias")] for line in body]
    assert np.mean(column) == pytest.approx(bias.position.bias)


def test_accuracy_against_rating_uses_self_play_where_there_is_some(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 200)
    strong = DebaterProfile.objects.get(name="strong")
    debate = Debate.objects.create(question=question, tournament=tournament, tournament_key="self", protocol="debate",
                                   settings={"rounds": 1}, constitution=default_constitution(), debater_a=strong,
                                   debater_b=strong, seed=1, status=Debate.Status.FINISHED)
    Verdict.objects.create(debate=debate, kind=Verdict.Kind.HUMAN, shown_first=0, p_a=0.6, p_b=0.4, correct=question.correct_index == 0)
    report = analysis.build_report(VerdictFilter(tournament=tournament.pk), rounds=20)
    points = {p.debater: p for p in report.accuracy_vs_rating}
    assert points["strong"].self_play and points["strong"].n == 1
    assert not points["weak"].self_play and points["weak"].n > 50
    assert points["strong"].elo > points["weak"].elo


def test_the_report_is_json_without_nan(question) -> None:  # type: ignore[no-untyped-def]
    data = analysis.build_report(rounds=5).as_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["verdicts"] == 0


# --- pages -------------------------------------------------------------------------------------


def test_the_ratings_page_shows_what_the_verdicts_imply(client, alice, question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 600)
    client.force_login(alice)
    response = client.get("/analysis/", {"tournament": tournament.pk, "rounds": 30})
    assert response.status_code == 200
    html = response.content.decode()
    table = html[html.index('id="ratings-table"') : html.index("</table>", html.index('id="ratings-table"'))]
    positions = [table.index(f"<td>{name}</td>") for name in ("strong", "good", "fair", "weak")]
    assert positions == sorted(positions)
    assert 'data="/analysis/plot/ratings.svg?' in html
    plot = client.get("/analysis/plot/accuracy-vs-rating.svg", {"tournament": tournament.pk, "rounds": 30})
    assert plot.status_code == 200 and plot["Content-Type"] == "image/svg+xml"
    assert b"<svg" in plot.content
    for name in ("ratings", "roles", "protocols", "judges", "reliability", "conditions"):
        assert client.get(f"/analysis/plot/{name}.svg", {"tournament": tournament.pk, "rounds": 30}).status_code == 200


def test_downloads_hold_the_same_numbers(client, alice, question) -> None:  # type: ignore[no-untyped-def]
    tournament = _simulate(question, 300)
    client.force_login(alice)
    data = client.get("/analysis/report.json", {"tournament": tournament.pk, "rounds": 20}).json()
    assert data["verdicts"] == 300
    assert data["debater_ratings"]["ratings"][0]["name"] == "strong"
    csv_text = client.get("/analysis/ratings.csv", {"tournament": tournament.pk, "rounds": 20}).content.decode()
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("rank,name,elo")
    assert lines[1].split(",")[1] == "strong"
    verdict_lines = client.get("/analysis/verdicts.csv", {"tournament": tournament.pk}).content.decode().strip().splitlines()
    assert len(verdict_lines) == 301
    assert client.get("/analysis/nonsense.csv").status_code == 404


def test_pages_are_for_researchers_and_reject_bad_filters(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    client.force_login(bob)
    assert client.get("/analysis/").status_code == 403
    assert client.get("/analysis/plot/ratings.svg").status_code == 403
    assert client.get("/analysis/report.json").status_code == 403
    client.force_login(alice)
    assert client.get("/analysis/", {"kind": "robots"}).status_code == 400
    assert client.get("/analysis/", {"rounds": "0"}).status_code == 400
    assert client.get("/analysis/plot/nothing.svg").status_code == 404


def test_a_debater_name_cannot_inject_markup_or_formulas(client, alice, question) -> None:  # type: ignore[no-untyped-def]
    _simulate(question, 50)
    DebaterProfile.objects.filter(name="weak").update(name="=cmd()<script>x</script>")
    client.force_login(alice)
    html = client.get("/analysis/", {"rounds": 5}).content.decode()
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    csv_text = client.get("/analysis/ratings.csv", {"rounds": 5}).content.decode()
    assert "'=cmd()" in csv_text
