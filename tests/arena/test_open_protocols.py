"""The runner's draws and choices: the consultant's side from the seed, and the open protocols'
choice of an answer (recorded once, with the protagonist seated on the side it chose)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from arena_test_doubles import ScriptedBackend

from arena import services, worker_loop
from arena.engine.protocol import Limits, draw_consultant_side
from arena.models import Debate
from arena.runner import run_debate
from debaters.backends.base import BackendError, BackendSpec, ChatMessage, ModelAPI
from debaters.models import DebaterProfile

pytestmark = pytest.mark.django_db(transaction=True)


class Chooser(ScriptedBackend):
    """Speaks like the scripted double; when asked to choose, prefers the answer ``prefer``."""

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        if self.spec.options.get("no_scores"):
            raise BackendError("this backend cannot score choices", permanent=True)
        content = messages[-1]["content"]
        preferred_is_a = f"A: {self.spec.options['prefer']}" in content
        if "Which answer do you choose" not in content:
            return [0.5, 0.5]
        return [0.8, 0.2] if preferred_is_a else [0.2, 0.8]


def _factory(spec: BackendSpec) -> ModelAPI:
    return Chooser(spec) if "prefer" in spec.options else ScriptedBackend(spec)


def _profiles(question, **chooser_options: object) -> tuple[DebaterProfile, DebaterProfile]:  # type: ignore[no-untyped-def]
    protagonist = DebaterProfile.objects.create(
        name="protagonist",
        backend="scripted",
        model="script",
        options={"text": "B", "prefer": question.answers[1], **chooser_options},
    )
    other = DebaterProfile.objects.create(name="other", backend="scripted", model="script", options={"text": "Other."})
    return protagonist, other


def _create(question, protocol: str, a: DebaterProfile, b: DebaterProfile) -> Debate:  # type: ignore[no-untyped-def]
    return services.create_debate(
        question=question,
        debater_a=a,
        debater_b=b,
        protocol=protocol,
        enqueue=False,
        seed=31,
        limits=Limits(rounds=1, max_tokens=32, word_limit=60, context_tokens=200),
    )


def test_it_seats_the_protagonist_on_the_answer_it_chose(question) -> None:  # type: ignore[no-untyped-def]
    protagonist, other = _profiles(question)
    debate = _create(question, "open-debate", protagonist, other)

    assert worker_loop.run(run_debate(debate.pk, "open-owner", model_factory=_factory)).status == "finished"

    debate.refresh_from_db()
    choice = debate.settings["open_choice"]
    assert choice["side"] == 1 and choice["p"] == [0.2, 0.8] and choice["method"] == "choice_probs"
    assert choice["protagonist"] == "protagonist" and choice["swapped"] is True
    assert len(choice["prompt_hashes"]) == 2 and choice["prompt_hashes"][0] != choice["prompt_hashes"][1]
    assert (debate.debater_a, debate.debater_b) == (other, protagonist)
    turns = {t.side: t for t in debate.turns.all()}
    assert "You chose this answer yourself" in turns[1].prompt[0]["content"]
    assert "You chose this answer yourself" not in turns[0].prompt[0]["content"]


def test_it_gives_the_open_consultant_the_answer_it_chose(question) -> None:  # type: ignore[no-untyped-def]
    protagonist, other = _profiles(question)
    debate = _create(question, "open-consultancy", protagonist, other)

    worker_loop.run(run_debate(debate.pk, "open-owner", model_factory=_factory))

    debate.refresh_from_db()
    assert [t.side for t in debate.turns.all()] == [1]
    assert debate.debater_b == protagonist
    assert "You are a consultant" in debate.turns.get().prompt[0]["content"]


def test_it_asks_for_a_letter_when_the_backend_cannot_score_choices(question) -> None:  # type: ignore[no-untyped-def]
    protagonist, other = _profiles(question, no_scores=True)
    debate = _create(question, "open-debate", protagonist, other)

    worker_loop.run(run_debate(debate.pk, "open-owner", model_factory=_factory))

    debate.refresh_from_db()
    # The scripted text "B" is the letter of answer 2 in the prompt that lists answer 1 first.
    assert debate.settings["open_choice"]["method"] == "generation"
    assert debate.settings["open_choice"]["side"] == 1


def test_it_records_a_consultants_side_drawn_from_the_seed_when_none_was_stored(question) -> None:  # type: ignore[no-untyped-def]
    protagonist, other = _profiles(question)
    debate = _create(question, "consultancy", other, other)
    assert debate.settings.get("consultant_side") is None

    worker_loop.run(run_debate(debate.pk, "open-owner", model_factory=_factory))

    debate.refresh_from_db()
    side = draw_consultant_side(debate.seed)
    assert debate.settings["consultant_side"] == side
    assert [t.side for t in debate.turns.all()] == [side]


def test_it_finishes_a_naive_judge_debate_without_loading_a_model(question) -> None:  # type: ignore[no-untyped-def]
    protagonist, other = _profiles(question)
    debate = _create(question, "naive", other, other)

    def no_models(spec: BackendSpec) -> ModelAPI:
        raise AssertionError("nobody speaks: no model may be loaded")

    outcome = worker_loop.run(run_debate(debate.pk, "open-owner", model_factory=no_models))

    debate.refresh_from_db()
    assert outcome.status == "finished" and debate.status == Debate.Status.FINISHED
    assert debate.turns.count() == 0
