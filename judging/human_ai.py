"""Human and AI judges on the same debates: accuracy per protocol with intervals for each, how often
they agree, and the debates where they differ.

Only debates with at least one human and one AI verdict count, so both accuracies are on the same
debates. Human verdicts of excluded judges are left out; verdicts that break an exposure rule and
verdicts of deactivated judges are left out unless asked for (as in exports).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db.models import QuerySet

from judging.models import Verdict
from judging.quality import deactivated_judges, excluded_judges, wilson
from judging.studies import exposure_flags


@dataclass(frozen=True)
class ProtocolComparison:
    protocol: str
    debates: int
    human_n: int
    human_correct: int
    human_interval: tuple[float, float]
    ai_n: int
    ai_correct: int
    ai_interval: tuple[float, float]
    pairs: int
    agreeing_pairs: int

    @property
    def human_accuracy(self) -> float:
        return self.human_correct / self.human_n if self.human_n else 0.0

    @property
    def ai_accuracy(self) -> float:
        return self.ai_correct / self.ai_n if self.ai_n else 0.0

    @property
    def agreement(self) -> float:
        return self.agreeing_pairs / self.pairs if self.pairs else 0.0


@dataclass(frozen=True)
class Disagreement:
    debate_id: int
    protocol: str
    gold: int
    human_pick: float  # share of human verdicts for answers[0]
    ai_pick: float  # share of AI verdicts for answers[0]


@dataclass(frozen=True)
class Comparison:
    protocols: list[ProtocolComparison]
    disagreements: list[Disagreement]


def compare(
    verdicts: QuerySet[Verdict] | None = None, *, include_flagged: bool = False, include_deactivated: bool = False
) -> Comparison:
    """Compare human and AI verdicts debate by debate (see the module docstring).

    Agreement counts every (human verdict, AI verdict) pair on a debate whose picks match; a debate
    is listed as a disagreement when the majority picks of the two kinds differ.
    """
    qs = verdicts if verdicts is not None else Verdict.objects.all()
    excluded = excluded_judges() if include_deactivated else excluded_judges() | deactivated_judges()
    flagged = set() if include_flagged else set(exposure_flags())
    picks: dict[int, dict[str, list[int]]] = defaultdict(lambda: {"human": [], "ai": []})
    meta: dict[int, tuple[str, int]] = {}
    for pk, debate_id, kind, judge_id, p_a, p_b, protocol, gold in qs.values_list(
        "pk", "debate_id", "kind", "judge_id", "p_a", "p_b", "debate__protocol", "debate__question__correct_index"
    ):
        if kind == Verdict.Kind.HUMAN and (judge_id in excluded or pk in flagged):
            continue
        picks[debate_id][kind].append(0 if p_a > p_b else 1)
        meta[debate_id] = (protocol, gold)
    by_protocol: dict[str, list[int]] = defaultdict(list)
    for debate_id, kinds in picks.items():
        if kinds["human"] and kinds["ai"]:
            by_protocol[meta[debate_id][0]].append(debate_id)
    rows = []
    disagreements = []
    for protocol in sorted(by_protocol):
        h_n = h_ok = a_n = a_ok = pairs = agree = 0
        for debate_id in by_protocol[protocol]:
            gold = meta[debate_id][1]
            human, ai = picks[debate_id]["human"], picks[debate_id]["ai"]
            h_n += len(human)
            h_ok += sum(1 for p in human if p == gold)
            a_n += len(ai)
            a_ok += sum(1 for p in ai if p == gold)
            pairs += len(human) * len(ai)
            agree += sum(1 for h in human for a in ai if h == a)
            human_share = sum(1 for p in human if p == 0) / len(human)
            ai_share = sum(1 for p in ai if p == 0) / len(ai)
            if (human_share > 0.5) != (ai_share > 0.5) and human_share != 0.5 and ai_share != 0.5:
                disagreements.append(Disagreement(debate_id, protocol, gold, human_share, ai_share))
        rows.append(ProtocolComparison(
            protocol, len(by_protocol[protocol]), h_n, h_ok, wilson(h_ok, h_n), a_n, a_ok, wilson(a_ok, a_n),
            pairs, agree,
        ))
    return Comparison(rows, sorted(disagreements, key=lambda d: d.debate_id))
