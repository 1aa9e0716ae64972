"""AI judges: letter probabilities in both orders, averaged; position bias; clamping; chain of thought;
stored as verdicts of kind ai, once per (debate, judge)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from asgiref.sync import async_to_sync

from arena.models import Debate
from debaters.backends.base import BackendSpec, ChatMessage, Delta, Final, GenerateRequest, ModelAPI, StreamItem
from judging.ai_judges import JudgeSpeech, JudgeView, judge_messages, judge_probabilities, judge_verdict, mark_quotes
from judging.ai_verdicts import give_ai_verdict
from judging.models import JudgeProfile, Verdict

VIEW = JudgeView(
    question="Where was Maitland taken?",
    answers=("To a different era", "To the moon"),
    transcript=(JudgeSpeech(0, 1, "It was the future."), JudgeSpeech(1, 1, "It was the moon.")),
)


class LetterJudge(ModelAPI):
    """Gives the letter A probability ``p_first`` whatever it reads (a judge with pure position bias),
    or, with ``favourite`` set, gives that answer's letter ``p_favourite`` (a judge without one)."""

    def __init__(self, p_first: float = 0.5, favourite: str | None = None, p_favourite: float = 0.9, reasoning: str = "") -> None:
        super().__init__(BackendSpec("double", "letters"))
        self.p_first = p_first
        self.favourite = favourite
        self.p_favourite = p_favourite
        self.reasoning = reasoning
        self.scored: list[list[ChatMessage]] = []
        self.generated: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        self.generated.append(request)
        yield Delta(self.reasoning)
        yield Final(self.reasoning, 10, 5, "stop")

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        self.scored.append(list(messages))
        if self.favourite is None:
            return [self.p_first, 1 - self.p_first]
        user = next(m["content"] for m in messages if m["role"] == "user")
        a_is_favourite = f"A: {self.favourite}" in user
        return [self.p_favourite, 1 - self.p_favourite] if a_is_favourite else [1 - self.p_favourite, self.p_favourite]


def _run(coro):  # type: ignore[no-untyped-def]
    """Await on a loop whose sync_to_async calls run in this thread (the test's transaction)."""

    async def _await():  # type: ignore[no-untyped-def]
        return await coro

    return async_to_sync(_await)()


def test_a_pure_position_bias_averages_out_and_is_measured() -> None:
    result = _run(judge_probabilities(LetterJudge(p_first=0.8), VIEW))
    assert result.p == pytest.approx((0.5, 0.5))
    assert sum(result.p) == pytest.approx(1.0)
    # answers[0] gets 0.8 when shown first (as A) and 0.2 when shown second (as B)
    assert result.by_order[0] == pytest.approx((0.8, 0.2))
    assert result.by_order[1] == pytest.approx((0.2, 0.8))
    assert result.position_bias == pytest.approx(0.3)


def test_a_judge_that_follows_the_answer_has_no_position_bias() -> None:
    judge = LetterJudge(favourite="To the moon", p_favourite=0.9)
    result = _run(judge_probabilities(judge, VIEW))
    assert result.p == pytest.approx((0.1, 0.9))
    assert result.position_bias == pytest.approx(0.0)
    # Both orders were really asked: the answer labelled A differs between the two prompts.
    firsts = [next(m["content"] for m in msgs if m["role"] == "user").split("\n")[2] for msgs in judge.scored]
    assert sorted(firsts) == ["A: To a different era", "A: To the moon"]


def test_clamping_limits_the_verdict_to_forty_sixty() -> None:
    result = _run(judge_verdict(LetterJudge(favourite="To the moon", p_favourite=0.95), VIEW, clamp=True))
    assert result.p == pytest.approx((0.4, 0.6))
    assert result.unclamped == pytest.approx((0.05, 0.95))
    assert result.clamped
    inside = _run(judge_verdict(LetterJudge(favourite="To the moon", p_favourite=0.55), VIEW, clamp=True))
    assert inside.p == pytest.approx((0.45, 0.55)) and not inside.clamped


def test_chain_of_thought_reasons_then_scores_the_letter_after_it() -> None:
    judge = LetterJudge(favourite="To the moon", reasoning="The moon speech quotes the text.")
    result = _run(judge_verdict(judge, VIEW, chain_of_thought=True, max_cot_tokens=40, seed=3))
    assert result.reasoning == ("The moon speech quotes the text.", "The moon speech quotes the text.")
    assert len(judge.generated) == 2
    assert all(r.params.max_tokens == 40 and r.params.temperature == 0.0 for r in judge.generated)
    for messages in judge.scored:
        assert messages[-2] == {"role": "assistant", "content": "The moon speech quotes the text."}
        assert "single letter" in messages[-1]["content"]
    assert result.completion_tokens == 10


def test_quotes_are_marked_for_the_judge_and_tags_are_gone() -> None:
    text = "See <quote>There was a thump.</quote> and <quote>cheese moon</quote>."
    quotes = [
        {"text": "There was a thump.", "start": 4, "end": 37, "verified": True, "similarity": 1.0, "source_span": [0, 18]},
        {"text": "cheese moon", "start": 42, "end": 68, "verified": False, "similarity": 0.2, "source_span": None},
    ]
    marked = mark_quotes(text, quotes)
    assert marked == 'See [verified quote] "There was a thump." and [unverified quote] "cheese moon".'
    assert "<quote>" not in marked


def test_the_prompt_fits_the_protocol() -> None:
    naive = JudgeView(question="Q?", answers=("x", "y"), transcript=(), protocol="naive")
    assert "Transcript" not in judge_messages(naive, 0)[1]["content"]
    expert = JudgeView(question="Q?", answers=("x", "y"), transcript=(), source="THE STORY", protocol="expert")
    assert "THE STORY" in judge_messages(expert, 0)[1]["content"]
    consult = JudgeView(question="Q?", answers=("x", "y"), transcript=VIEW.transcript, protocol="consultancy")
    assert "consultant" in judge_messages(consult, 1)[0]["content"]


def test_an_interactive_judge_reads_its_questions_between_rounds() -> None:
    view = JudgeView(
        question="Q?", answers=("x", "y"), protocol="interactive",
        transcript=(JudgeSpeech(0, 1, "one"), JudgeSpeech(1, 1, "two"), JudgeSpeech(0, 2, "three"), JudgeSpeech(1, 2, "four")),
        questions=((1, "Why the moon?"),),
    )
    text = judge_messages(view, 0)[1]["content"]
    assert text.index("two") < text.index("The judge asked, after round 1:\nWhy the moon?") < text.index("three")


@pytest.mark.django_db
def test_a_verdict_is_stored_once_with_both_orders(finished_debate) -> None:  # type: ignore[no-untyped-def]
    settings = dict(finished_debate.settings, shown_first=1)
    Debate.objects.filter(pk=finished_debate.pk).update(settings=settings)
    profile = JudgeProfile.objects.create(name="letters", backend="double", model="letters", clamp=False)
    judge = LetterJudge(p_first=0.7)
    verdict = _run(give_ai_verdict(finished_debate.pk, profile.pk, model_factory=lambda spec: judge))
    assert verdict is not None
    assert verdict.kind == Verdict.Kind.AI and verdict.ai_judge == profile and verdict.judge is None
    assert verdict.judge_label == profile.label
    assert verdict.shown_first == 1
    assert verdict.p_a + verdict.p_b == pytest.approx(1.0)
    assert verdict.position_bias == pytest.approx(0.2)
    assert verdict.meta["by_order"] == [pytest.approx([0.7, 0.3]), pytest.approx([0.3, 0.7])]
    assert verdict.meta["cot"] is None
    # Judging again stores nothing (one verdict per AI judge and debate).
    assert _run(give_ai_verdict(finished_debate.pk, profile.pk, model_factory=lambda spec: judge)) is None
    assert Verdict.objects.filter(debate=finished_debate).count() == 1


@pytest.mark.django_db
def test_correctness_follows_the_gold_answer_and_clamping_is_recorded(finished_debate) -> None:  # type: ignore[no-untyped-def]
    gold = finished_debate.question.answers[finished_debate.question.correct_index]
    profile = JudgeProfile.objects.create(name="fan", backend="double", model="fan", clamp=True)
    judge = LetterJudge(favourite=gold, p_favourite=0.99)
    verdict = _run(give_ai_verdict(finished_debate.pk, profile.pk, model_factory=lambda spec: judge))
    assert verdict.correct
    assert verdict.p_correct(finished_debate.question.correct_index) == pytest.approx(0.6)
    assert verdict.meta["clamped"] and verdict.meta["unclamped"][finished_debate.question.correct_index] == pytest.approx(0.99)


@pytest.mark.django_db
def test_an_unfinished_debate_is_not_judged(make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = make_debate()
    profile = JudgeProfile.objects.create(name="early", backend="double", model="x")
    assert _run(give_ai_verdict(debate.pk, profile.pk, model_factory=lambda spec: LetterJudge())) is None
    assert not Verdict.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_embedded_model_judges_a_debate(finished_debate) -> None:  # type: ignore[no-untyped-def]
    from arena import worker_loop
    from judging.ai_verdicts import default_judge_profile

    profile = default_judge_profile()
    verdict = worker_loop.run(give_ai_verdict(finished_debate.pk, profile.pk))
    assert verdict is not None
    assert verdict.p_a + verdict.p_b == pytest.approx(1.0)
    first, second = verdict.meta["by_order"]
    assert 0.0 < first[0] < 1.0 and 0.0 < second[0] < 1.0
    assert verdict.p_a == pytest.approx((first[0] + second[0]) / 2)
    assert verdict.position_bias == pytest.approx((first[0] - second[0]) / 2)
