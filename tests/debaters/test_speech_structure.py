"""The speech structure (debaters.speech, issue 13): prompt building, prefill, stops, quote handling and
cut marking. These tests pin the structure, not the model's quality (bench/debate_quality.py measures
that). Generation runs on a recording test double; one test runs the prefill on the real embedded
model through the transformers backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from debaters.backends.base import BackendSpec, ChatMessage, Delta, Final, GenerateRequest, ModelAPI, SamplingParams, StreamItem
from debaters.prompts import DebaterView, SpeechRecord, reflow, speech_prefill, structured_debater_messages
from debaters.quotes import SourceIndex, check_quotes
from debaters.speech import (
    ARGUMENT_OPENING,
    EVIDENCE,
    FREE,
    STRUCTURED,
    cut_to_sentence,
    ends_sentence,
    generate_speech,
    plan_speech,
)

STORY = (
    "Maitland woke in a strange room.\nThe lawn outside was not part of the Reservation.\n\n"
    "Swarts told him he had been taken to a different era. The year was far in the future."
)
ANSWERS = ("To a different era", "To the moon")


def _view(side: int = 0, round_: int = 1, transcript: tuple[SpeechRecord, ...] = ()) -> DebaterView:
    return DebaterView(
        question="Where was Maitland taken?", answers=ANSWERS, side=side, round=round_, rounds=2, word_limit=150,
        excerpts=STORY, transcript=transcript, source_title="Ambition", quote_budget=60,
    )


class Recorder(ModelAPI):
    """Answers each request with the next scripted (text, finish_reason), streamed in two deltas."""

    def __init__(self, outputs: Sequence[tuple[str, str]]) -> None:
        super().__init__(BackendSpec("recorder", "none"))
        self.outputs = list(outputs)
        self.requests: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        text, finish = self.outputs.pop(0)
        half = len(text) // 2
        for piece in (text[:half], text[half:]):
            if piece:
                yield Delta(piece)
        yield Final(text=text, prompt_tokens=100, completion_tokens=max(1, len(text.split())), finish_reason=finish)


async def _run(model: ModelAPI, plan, params: SamplingParams):  # type: ignore[no-untyped-def]
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async def on_reset(text: str, reason: str) -> None:
        shown.clear()
        shown.append(text)

    speech = await generate_speech(model, plan, params, on_delta=on_delta, on_reset=on_reset)
    return speech, "".join(shown)


def test_the_structured_prompt_states_the_answer_opens_a_quote_and_ends_with_the_text() -> None:
    messages = structured_debater_messages("PREAMBLE", "- [p1] principle one", _view(side=1))
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert "PREAMBLE" in messages[0]["content"] and "principle one" in messages[0]["content"]
    assert messages[-1]["content"] == 'I argue that the answer is "To the moon". The text says: <quote>'
    user = messages[1]["content"]
    # The story comes last (a small model quotes what it read last), hard wraps joined.
    assert user.rstrip().endswith("The year was far in the future.")
    assert "woke in a strange room. The lawn" in user
    assert 'You defend: "To the moon"' in user


def test_the_transcript_shows_earlier_quotes_as_quotation_marks_and_round_two_keeps_the_side() -> None:
    earlier = (SpeechRecord(0, 1, "Mine: <quote>Maitland woke in a strange room.</quote> ok."),)
    messages = structured_debater_messages("P", "- [p] x", _view(side=1, round_=2, transcript=earlier))
    assert "<quote>" not in messages[1]["content"]
    assert "\u201cMaitland woke in a strange room.\u201d" in messages[1]["content"]
    assert messages[-1]["content"].startswith('My answer is still "To the moon", and my opponent is wrong.')


def test_reflow_joins_hard_wrapped_lines_and_keeps_paragraphs() -> None:
    assert reflow("a b\nc d\n\ne f\ng") == "a b c d\n\ne f g"


def test_the_example_exchange_is_optional_and_keeps_the_prefill_last() -> None:
    messages = structured_debater_messages("P", "- [p] x", _view(), example=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[-1]["content"] == speech_prefill(_view())


def test_the_evidence_plan_lists_story_sentences_and_records_them() -> None:
    plan = plan_speech(EVIDENCE, "P", "- [p] x", _view(), STORY)
    shown = plan.meta["evidence_tool"]["sentences"]  # type: ignore[index]
    assert shown and all(c.verified for s in shown for c in check_quotes(f"<quote>{s}</quote>", SourceIndex(STORY)))
    assert shown[0] in plan.messages[-2]["content"]


def test_the_free_plan_is_one_request_without_prefill() -> None:
    plan = plan_speech(FREE, "P", "- [p] x", _view(), STORY)
    assert plan.prefill == "" and len(plan.phases) == 1 and plan.messages[-1]["role"] == "user"


def test_a_structured_speech_is_prefill_then_the_models_quote_then_its_argument() -> None:
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY)
    model = Recorder([("\nSwarts told him he had been taken to a different era. More copied text", "length"),
                      (" the story says he travelled in time. Nothing mentions the moon.", "stop")])
    params = SamplingParams(max_tokens=160, seed=7, stop=("Judge:",))
    speech, shown = asyncio.run(_run(model, plan, params))
    first, second = model.requests
    # Phase 1 continues the prefill and stops at the closing tag; phase 2 continues the closed quote.
    assert first.messages[-1] == {"role": "assistant", "content": plan.prefill}
    assert "</quote>" in first.params.stop and "Judge:" in first.params.stop
    assert first.params.max_tokens < 160
    assert second.messages[-1]["content"].endswith(f"</quote> {ARGUMENT_OPENING}")
    assert "\n" in second.params.stop and "<quote>" in second.params.stop
    assert speech.text == (
        f"{plan.prefill}Swarts told him he had been taken to a different era.</quote> {ARGUMENT_OPENING} "
        "the story says he travelled in time. Nothing mentions the moon."
    )
    assert shown == speech.text  # what the judge saw is what is kept
    assert [c.verified for c in check_quotes(speech.text, SourceIndex(STORY))] == [True]
    assert not speech.cut and speech.final.finish_reason == "stop"


def test_a_speech_cut_at_the_token_limit_ends_at_a_sentence_and_is_marked_cut() -> None:
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY)
    model = Recorder([("The year was far in the future.", "stop"), (" he went forward. And then the", "length")])
    speech, shown = asyncio.run(_run(model, plan, SamplingParams(max_tokens=40)))
    assert speech.cut and speech.final.finish_reason == "length" and speech.meta["cut"]["reason"] == "max_tokens"  # type: ignore[index]
    assert speech.text.endswith("he went forward.") and ends_sentence(speech.text)
    assert shown == speech.text


def test_a_free_speech_at_the_token_limit_is_marked_cut_too() -> None:
    plan = plan_speech(FREE, "P", "- [p] x", _view(), STORY)
    speech, _ = asyncio.run(_run(Recorder([("No sentence end here at all", "length")]), plan, SamplingParams()))
    assert speech.cut and speech.text == "No sentence end here at all"


def test_a_quote_already_used_in_the_debate_is_sampled_again_with_another_seed() -> None:
    earlier = (SpeechRecord(1, 1, "<quote>Maitland woke in a strange room.</quote> So."),)
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(round_=2, transcript=earlier), STORY)
    model = Recorder([("Maitland woke in a strange room.", "stop"), ("The year was far in the future.", "stop"),
                      (" time travel.", "stop")])
    speech, _ = asyncio.run(_run(model, plan, SamplingParams(seed=3)))
    assert model.requests[0].params.seed != model.requests[1].params.seed
    assert "<quote>The year was far in the future.</quote>" in speech.text and speech.meta["quote_resamples"] == 1


def test_an_argument_that_repeats_an_earlier_sentence_ends_before_the_repeat() -> None:
    earlier = (SpeechRecord(1, 1, "It is the moon for sure. Read it."),)
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(round_=2, transcript=earlier), STORY)
    model = Recorder([("The year was far in the future.", "stop"), (" he travelled. It is the moon for sure.", "stop")])
    speech, _ = asyncio.run(_run(model, plan, SamplingParams()))
    assert speech.text.endswith("he travelled.") and "repeat_cut" in speech.meta


def test_no_quote_written_takes_the_opened_tag_back() -> None:
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY)
    model = Recorder([("", "stop"), ("", "stop"), ("", "stop"), ("It was the future.", "stop")])
    speech, _ = asyncio.run(_run(model, plan, SamplingParams()))
    assert "<quote>" not in speech.text and speech.text.startswith('I argue that the answer is "To a different era".')


def test_cut_to_sentence_never_cuts_inside_a_quote() -> None:
    text = "Intro. <quote>A long. quote</quote> tail"
    assert cut_to_sentence(text) == "Intro."
    assert cut_to_sentence("x <quote>Ends here.</quote> and more", 2) == "x <quote>Ends here.</quote>"


def _prefill_request(messages: Sequence[ChatMessage]) -> GenerateRequest:
    return GenerateRequest(tuple(messages), SamplingParams(max_tokens=12, temperature=0.0))


def test_the_transformers_backend_continues_a_prefilled_reply() -> None:
    """Prefill on the real embedded model: the reply continues the started text, which is not repeated."""
    from debaters.backends.transformers_backend import TransformersBackend

    ask: list[ChatMessage] = [{"role": "user", "content": "Write the digits 1 to 9 then 0, twice, with no spaces."}]

    async def go() -> tuple[Final, str, Final]:
        api = TransformersBackend(BackendSpec("transformers", "embedded", {"device": "cpu", "dtype": "float32"}))
        try:
            whole = await api.complete(_prefill_request(ask))
            head = whole.text[: len(whole.text) // 2]
            continued = await api.complete(_prefill_request([*ask, {"role": "assistant", "content": head}]))
            return whole, head, continued
        finally:
            await api.aclose()

    whole, head, continued = asyncio.run(go())
    assert len(head) >= 2 and continued.text
    # Greedy decoding goes on where the prefill stops, as the reply without a prefill did.
    assert (head + continued.text).startswith(whole.text[: len(head) + 2])


def test_a_structured_speech_streams_the_quote_live_and_never_takes_back_what_it_showed() -> None:
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY)
    model = Recorder([("Swarts told him he had been taken to a different era. Extra words here", "stop"),
                      (" he went to the future. And an unfinished", "stop")])
    pieces: list[str] = []
    resets: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    async def on_reset(text: str, reason: str) -> None:
        resets.append(reason)

    speech = asyncio.run(generate_speech(model, plan, SamplingParams(), on_delta=on_delta, on_reset=on_reset))
    assert pieces[0] == 'I argue that the answer is "To a different era".'  # shown before the model writes
    assert len(pieces) >= 3 and not resets
    assert "".join(pieces) == speech.text and speech.text.endswith("he went to the future.")
    assert speech.meta["trimmed"] == {"dropped_chars": len("And an unfinished")}
