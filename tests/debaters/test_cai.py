"""Critique-and-revision (SL-CAI) and best-of-N: what they store, what the judge never sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest
from arena_event_capture import collect_events, reconstruct
from arena_test_doubles import ScriptedBackend

from arena import services, worker_loop
from arena.engine.protocol import ProtocolSettings
from arena.models import Candidate, Debate, Revision
from arena.runner import run_debate, turn_payload
from debaters.backends.base import (
    BackendSpec,
    ChatMessage,
    Final,
    GenerateRequest,
    ModelAPI,
    SamplingParams,
    StreamItem,
)
from debaters.cai import Principle, best_of_n, critique_and_revise, pick_principle, principles_from
from debaters.models import DebaterProfile

PRINCIPLES = [Principle("a", "Be exact."), Principle("b", "Be brief."), Principle("c", "Answer the judge.")]


# --- Pure -----------------------------------------------------------------------------------------


def test_it_draws_the_principle_from_the_seed_reproducibly() -> None:
    draws = [pick_principle(PRINCIPLES, seed=7, turn_index=t, step=s).id for t in range(10) for s in range(3)]

    assert draws == [pick_principle(PRINCIPLES, seed=7, turn_index=t, step=s).id for t in range(10) for s in range(3)]
    assert set(draws) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="no principles"):
        pick_principle([], seed=1, turn_index=0, step=0)


class _Echo(ModelAPI):
    """Completes each request with the next scripted text and records the request."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__(BackendSpec("test", "echo"))
        self.texts = list(texts)
        self.requests: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        text = self.texts.pop(0)
        yield Final(text=text, prompt_tokens=1, completion_tokens=len(text.split()), finish_reason="stop")


def _request() -> GenerateRequest:
    return GenerateRequest(
        messages=({"role": "user", "content": "Argue."},), params=SamplingParams(max_tokens=32, seed=40)
    )


def test_it_critiques_against_the_principle_and_revises_the_last_revision() -> None:
    model = _Echo(["critique one", "revision one", "critique two", "revision two"])

    final, steps = asyncio.run(
        critique_and_revise(
            model, _request().messages, "the draft", PRINCIPLES, 2, _request(), seed=3, turn_index=1, word_limit=50
        )
    )

    assert final == "revision two"
    assert [(s.draft, s.critique, s.revision) for s in steps] == [
        ("the draft", "critique one", "revision one"),
        ("revision one", "critique two", "revision two"),
    ]
    critique_prompt = model.requests[0].messages
    assert critique_prompt[-2] == {"role": "assistant", "content": "the draft"}
    assert steps[0].principle.text in critique_prompt[-1]["content"]
    revision_prompt = model.requests[1].messages
    assert {"role": "assistant", "content": "critique one"} in revision_prompt
    assert "50 words" in revision_prompt[-1]["content"]
    assert len({r.params.seed for r in model.requests}) == 4


def test_it_keeps_the_previous_text_when_a_revision_comes_back_empty() -> None:
    model = _Echo(["critique", "   "])

    final, steps = asyncio.run(
        critique_and_revise(
            model, _request().messages, "the draft", PRINCIPLES, 1, _request(), seed=3, turn_index=0, word_limit=50
        )
    )

    assert final == "the draft" and steps[0].revision == ""


def test_it_keeps_the_best_candidate_and_breaks_ties_by_the_lowest_index() -> None:
    scores = {"w1": 0.2, "s": 0.8, "w2": 0.2, "s2": 0.8}

    async def score(text: str) -> float:
        return scores[text]

    results = asyncio.run(best_of_n(_Echo(["w1", "s", "w2", "s2"]), _request(), 4, score))

    assert [(r.index, r.text, r.score, r.chosen) for r in results] == [
        (0, "w1", 0.2, False),
        (1, "s", 0.8, True),
        (2, "w2", 0.2, False),
        (3, "s2", 0.8, False),
    ]


def test_it_samples_each_candidate_with_its_own_seed() -> None:
    model = _Echo(["a", "b", "c"])

    async def score(text: str) -> float:
        return 0.5

    asyncio.run(best_of_n(model, _request(), 3, score))

    assert [r.params.seed for r in model.requests] == [400, 401, 402]


# --- In the runner (scripted debaters) -----------------------------------------------------------


class KeywordJudge(ModelAPI):
    """An AI judge that believes the answer ``favoured`` when the transcript says STRONG."""

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        raise AssertionError("the judge only scores")
        yield  # pragma: no cover

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        content = messages[-1]["content"]
        if "concede" in content:
            return [0.95, 0.05]
        p = 0.9 if "STRONG" in content else 0.5
        favoured_is_a = f"A: {self.spec.options['favoured']}" in content
        return [p, 1 - p] if favoured_is_a else [1 - p, p]


class _Factory:
    """Model factory for the runner: one instance per spec, kept for inspection."""

    def __init__(self) -> None:
        self.instances: dict[object, ModelAPI] = {}

    def __call__(self, spec: BackendSpec) -> ModelAPI:
        if spec.key() not in self.instances:
            cls = KeywordJudge if spec.model == "keyword-judge" else ScriptedBackend
            self.instances[spec.key()] = cls(spec)
        return self.instances[spec.key()]


def _debate(question, texts_a: list[str], settings: ProtocolSettings) -> Debate:  # type: ignore[no-untyped-def]
    a = DebaterProfile.objects.create(name="cai-a", backend="scripted", model="script", options={"texts": texts_a})
    b = DebaterProfile.objects.create(
        name="cai-b", backend="scripted", model="script", options={"text": "Plain reply."}
    )
    return services.create_debate(question=question, debater_a=a, debater_b=b, limits=settings, enqueue=False, seed=11)


@pytest.mark.django_db(transaction=True)
def test_it_stores_every_critique_step_and_shows_only_the_final_revision(question) -> None:  # type: ignore[no-untyped-def]
    settings = ProtocolSettings(rounds=1, max_tokens=64, word_limit=60, context_tokens=200, critique_rounds=(2, 0))
    debate = _debate(question, ["DRAFT text", "CRITIQUE-1", "REVISED-1", "CRITIQUE-2", "REVISED-2"], settings)
    factory = _Factory()

    events = collect_events(
        debate.pk, lambda: worker_loop.run(run_debate(debate.pk, "cai-owner", model_factory=factory))
    )

    turn = debate.turns.get(side=0)
    assert turn.text == "REVISED-2"
    revisions = list(Revision.objects.filter(turn=turn).order_by("step"))
    assert [(r.step, r.draft, r.critique, r.revision) for r in revisions] == [
        (0, "DRAFT text", "CRITIQUE-1", "REVISED-1"),
        (1, "REVISED-1", "CRITIQUE-2", "REVISED-2"),
    ]
    principles = principles_from(debate.constitution.principles)
    for r in revisions:
        expected = pick_principle(principles, seed=debate.seed, turn_index=turn.index, step=r.step)
        assert (r.principle_id, r.principle) == (expected.id, expected.text)
        assert r.prompt == turn.prompt
    assert turn.meta["cai"]["rounds"] == 2
    assert not Revision.objects.filter(turn=debate.turns.get(side=1)).exists()
    # The judge's stream and payload carry the final speech only.
    assert reconstruct(events)[turn.index] == "REVISED-2"
    seen = json.dumps(events) + json.dumps(turn_payload(turn))
    for secret in ("DRAFT text", "CRITIQUE-1", "REVISED-1", "CRITIQUE-2"):
        assert secret not in seen


@pytest.mark.django_db(transaction=True)
def test_it_stores_every_candidate_with_the_judges_score_and_uses_the_best(question) -> None:  # type: ignore[no-untyped-def]
    from judging.models import JudgeProfile

    judge = JudgeProfile.objects.create(
        name="kw", backend="scripted", model="keyword-judge", options={"favoured": question.answers[0]}
    )
    settings = ProtocolSettings(
        rounds=1, max_tokens=64, word_limit=60, context_tokens=200, best_of_n=(3, 1), judge_profile="kw"
    )
    debate = _debate(question, ["weak one", "STRONG two", "weak three"], settings)
    factory = _Factory()

    events = collect_events(
        debate.pk, lambda: worker_loop.run(run_debate(debate.pk, "cai-owner", model_factory=factory))
    )

    turn = debate.turns.get(side=0)
    candidates = list(Candidate.objects.filter(turn=turn).order_by("index"))
    assert [(c.text, c.chosen) for c in candidates] == [
        ("weak one", False),
        ("STRONG two", True),
        ("weak three", False),
    ]
    assert [round(c.score, 6) for c in candidates] == [0.5, 0.9, 0.5]
    assert turn.text == "STRONG two"
    assert turn.meta["best_of_n"] == {"n": 3, "judge": judge.label, "chosen": 1}
    assert reconstruct(events)[turn.index] == "STRONG two"
    assert "weak one" not in json.dumps(events)
    assert not Candidate.objects.filter(turn=debate.turns.get(side=1)).exists()


@pytest.mark.django_db(transaction=True)
def test_it_scores_candidates_with_the_debaters_own_model_when_no_judge_is_configured(question) -> None:  # type: ignore[no-untyped-def]
    settings = ProtocolSettings(rounds=1, max_tokens=64, word_limit=60, context_tokens=200, best_of_n=(2, 1))
    debate = _debate(question, ["first", "second"], settings)

    worker_loop.run(run_debate(debate.pk, "cai-owner", model_factory=_Factory()))

    turn = debate.turns.get(side=0)
    # The scripted model has no opinion (0.5 for both), so the first candidate wins the tie.
    assert [(c.text, c.score, c.chosen) for c in turn.candidates.order_by("index")] == [
        ("first", 0.5, True),
        ("second", 0.5, False),
    ]
    assert "own model" in turn.meta["best_of_n"]["judge"]


# --- On the embedded model ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_runs_best_of_n_then_critique_on_the_embedded_model(question, profile) -> None:  # type: ignore[no-untyped-def]
    from arena.constitution import DEFAULT_RULES, default_constitution, new_version

    # One consultant, a short constitution and no concession check keep the real model's work small.
    base = default_constitution()
    compact = new_version(
        base,
        name="cai-compact",
        preamble="Debate honestly.",
        principles=base.principles[:3],
        rules={**DEFAULT_RULES, "check_concession": False},
    )
    settings = ProtocolSettings(
        rounds=1,
        max_tokens=12,
        word_limit=60,
        context_tokens=100,
        consultant_side=0,
        critique_rounds=(1, 0),
        best_of_n=(2, 1),
    )
    debate = services.create_debate(
        question=question,
        debater_a=profile,
        debater_b=profile,
        limits=settings,
        protocol="consultancy",
        constitution=compact,
        enqueue=False,
        seed=21,
    )

    outcome = worker_loop.run(run_debate(debate.pk, "cai-real"))

    debate.refresh_from_db()
    assert outcome.status == "finished", debate.error
    turn = debate.turns.get()
    candidates = list(turn.candidates.order_by("index"))
    assert len(candidates) == 2 and sum(c.chosen for c in candidates) == 1
    assert all(0.0 <= c.score <= 1.0 for c in candidates)
    best = next(c for c in candidates if c.chosen)
    assert best.score == max(c.score for c in candidates)
    revision = turn.revisions.get()
    assert revision.draft == best.text, "the chosen candidate is what gets critiqued"
    assert revision.critique.strip()
    assert revision.principle_id in {p["id"] for p in compact.principles}
    # 12 tokens cannot pass the 60-word limit, so the referee keeps the final text whole.
    assert turn.text.strip() == (revision.revision or revision.draft).strip()
