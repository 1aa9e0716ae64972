"""Constrained decoding (debaters.backends.constraint, issue 13): the rules on their own, the
transformers backend applying them on the real embedded model, and a structured speech asking for
them (quote copied from the story, no 8 words of an earlier speech) and finishing what it got."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest

from arena.importing import SAMPLE_SET
from debaters.backends.base import BackendSpec, Delta, Final, GenerateRequest, ModelAPI, SamplingParams, StreamItem
from debaters.backends.constraint import SEGMENT_BREAK, TextConstraint
from debaters.prompts import DebaterView, SpeechRecord
from debaters.quotes import SourceIndex, check_quotes
from debaters.speech import QUOTE_AVOID_WORDS, QUOTE_MIN_WORDS, STRUCTURED, generate_speech, plan_speech

STORY = (
    "Maitland woke in a strange room.\nThe lawn outside was not part of the Reservation.\n\n"
    "Swarts told him he had been taken to a different era. The year was far in the future."
)


def _copy(**kwargs: object) -> TextConstraint:
    return TextConstraint(source=STORY, **kwargs)  # type: ignore[arg-type]


# --- The rules --------------------------------------------------------------------------------


def test_the_copy_rule_allows_spans_of_the_story_that_start_on_a_word() -> None:
    rule = _copy().compile(("</quote>",))
    for text in (
        "",
        " ",
        "Swarts",
        " Swarts told him",
        "Maitland woke in a strange room.",
        "The la",
    ):
        assert rule.allows(text), text
    # Mid-word starts, words the story does not hold, and a line break inside the text are refused.
    for text in ("arts told", "Swarts told her", "Maitland woke on"):
        assert not rule.allows(text), text
    # A line break ends a copied text: before the minimum number of words, that is refused.
    assert _copy().compile().allows("Swarts\ntold") and not _copy(min_words=5).compile().allows("Swarts\ntold")


def test_the_copy_rule_keeps_the_punctuation_as_written() -> None:
    """The referee ignores punctuation; the constraint does not, or a small model strings story words
    together with stray marks ("They had. "A" - ...") that verify and read as nonsense."""
    rule = _copy().compile()
    assert rule.allows("room. The lawn")
    assert not rule.allows("room; The lawn") and not rule.allows('strange "room')
    # Typographic marks and spacing do not matter.
    assert TextConstraint(source="It wasn’t  there.").compile().allows("it wasn't there.")


def test_the_copy_rule_keeps_the_case_as_written_but_for_the_first_letter() -> None:
    rule = _copy().compile()
    assert rule.allows("maitland woke") and rule.allows("The lawn") and rule.allows("the lawn")
    assert not rule.allows("Maitland WOKE") and not rule.allows("FoR")


def test_continuations_say_how_the_story_goes_on_after_the_copied_text() -> None:
    rule = _copy().compile(("</quote>",))
    assert rule.continuations("The") == [" lawn outside was not pa", " year was far in the fut"]
    # Mid-word, after a sentence end across a line break, and after a trailing space.
    assert rule.continuations("Maitland woke in a str") == ["ange room. The lawn outs"]
    assert rule.continuations("room. ") == ["The lawn outside was not"]
    assert rule.continuations("the year was far in the") == [" future."]
    # Nothing after text the story does not hold, or once a stop has started.
    assert rule.continuations("zzz") == [] and rule.continuations("Swarts told him</") == []
    assert TextConstraint(avoid=("x",)).compile().continuations("The") == []


def test_a_copy_never_spans_a_break_between_passages() -> None:
    rule = TextConstraint(source=f"The lawn was green.{SEGMENT_BREAK}The year was far.").compile()
    assert rule.allows("The lawn was green.") and rule.allows("The year was far.")
    assert not rule.allows("green. The year") and not rule.allows(f"green.{SEGMENT_BREAK}")
    assert rule.continuations("The lawn was green.") == []


def test_the_quote_is_copied_from_the_excerpts_the_debater_was_shown() -> None:
    excerpts = "Maitland woke in a strange room.\n\n[…]\n\nThe year was far in the future."
    view = DebaterView(
        question="Where?",
        answers=("a", "b"),
        side=0,
        round=1,
        rounds=2,
        word_limit=150,
        excerpts=excerpts,
        transcript=(),
        source_title="Ambition",
        quote_budget=60,
    )
    plan = plan_speech(STRUCTURED, "P", "- [p] x", view, STORY)
    assert plan.copy_from == f"Maitland woke in a strange room.\n\n{SEGMENT_BREAK}\n\nThe year was far in the future."
    assert plan.source == STORY  # what the referee checks a finished quote against


def test_a_stop_or_an_end_needs_the_minimum_words_and_a_whole_word() -> None:
    rule = _copy(min_words=5).compile(("</quote>",))
    assert not rule.allows("Swarts told him</quote>") and not rule.allows_end("Swarts told him")
    assert rule.allows("Swarts told him he had</") and rule.allows("Swarts told him he had</quote>")
    assert rule.allows_end("Swarts told him he had")
    # Ending inside a word of the story is not ending on a word boundary.
    assert not rule.allows("Swarts told him he ha</quote>") and not rule.allows_end("Swarts told him he ha")
    # A stop started and then left is markup, never story text.
    assert not rule.allows("Swarts told him he had</qux")


def test_the_avoid_rule_refuses_the_eighth_word_of_an_earlier_run() -> None:
    earlier = "I say the year was far in the future and nothing else matters here."
    rule = TextConstraint(avoid=(earlier,)).compile()
    assert rule.allows("Indeed the year was far in the future")  # 7 words of the run, and a partial 8th
    assert rule.allows("Indeed the year was far in the future an")  # "an" is still being written
    assert not rule.allows("Indeed the year was far in the future and ")
    assert not rule.allows("THE YEAR, was far in the future and nothing")  # compared as the referee compares
    assert rule.allows("The year was far in the past and nothing else matters")
    # A quote's first word is a word, not part of its tag.
    quoted = TextConstraint(
        avoid=("He said: <quote>When the men clambered from their shelters.</quote>",), avoid_words=4
    )
    assert not quoted.compile().allows("When the men clambered ")


# --- The transformers backend on the real embedded model --------------------------------------


def _ambition() -> str:
    with SAMPLE_SET.open(encoding="utf-8") as lines:
        first = json.loads(next(lines))
    return str(first["source"]["text"])


def test_the_transformers_backend_copies_a_constrained_quote_from_the_story() -> None:
    """Asked to quote its instructions (not the story), the model writes them when unconstrained; under
    the copy rule every token it writes continues a span of the story, and the quote verifies."""
    from debaters.backends.transformers_backend import TransformersBackend

    story = _ambition()
    messages = (
        {
            "role": "user",
            "content": f"Rules: a judge who cannot read the text decides.\n\nStory:\n{story[:1500]}\n\nQuote the rules.",
        },
        {"role": "assistant", "content": "The rules say: <quote>"},
    )
    params = SamplingParams(max_tokens=40, temperature=0.0, stop=("</quote>",))

    async def go() -> tuple[Final, Final]:
        api = TransformersBackend(BackendSpec("transformers", "embedded", {"device": "cpu", "dtype": "float32"}))
        try:
            assert api.honours_constraints
            free = await api.complete(GenerateRequest(messages, params))
            bound = await api.complete(GenerateRequest(messages, params, TextConstraint(source=story, min_words=5)))
            return free, bound
        finally:
            await api.aclose()

    free, bound = asyncio.run(go())
    index = SourceIndex(story)
    assert not check_quotes(f"<quote>{free.text}</quote>", index)[0].verified
    quote = bound.text.split("\n")[0]
    assert len(quote.split()) >= 5
    assert check_quotes(f"<quote>{quote}</quote>", index)[0].verified, bound.text


# --- A structured speech asks for it ----------------------------------------------------------


class ConstrainedRecorder(ModelAPI):
    """A test double that says it honours constraints and answers with scripted texts."""

    honours_constraints = True

    def __init__(self, outputs: Sequence[tuple[str, str]]) -> None:
        super().__init__(BackendSpec("recorder", "none"))
        self.outputs = list(outputs)
        self.requests: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        text, finish = self.outputs.pop(0)
        for number, word in enumerate(text.split(" ")):
            yield Delta(f" {word}" if number else word)
        yield Final(text=text, prompt_tokens=100, completion_tokens=max(1, len(text.split())), finish_reason=finish)


def _view(transcript: tuple[SpeechRecord, ...] = (), round_: int = 1) -> DebaterView:
    return DebaterView(
        question="Where was Maitland taken?",
        answers=("To a different era", "To the moon"),
        side=0,
        round=round_,
        rounds=2,
        word_limit=150,
        excerpts=STORY,
        transcript=transcript,
        source_title="Ambition",
        quote_budget=60,
    )


def test_a_structured_plan_constrains_its_quote_to_the_story_and_its_words_to_new_ones() -> None:
    earlier = (SpeechRecord(1, 1, "It is the moon for sure, as the year was far in the future."),)
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(earlier, round_=2), STORY)
    model = ConstrainedRecorder(
        [
            ("", "stop"),
            ("Swarts told him he had been taken to a different era.", "stop"),
            (" he travelled in time.", "stop"),
        ]
    )
    speech = asyncio.run(generate_speech(model, plan, SamplingParams(seed=4)))
    first, resampled, argument = model.requests
    for quote_request in (first, resampled):  # a resample keeps the constraint
        assert quote_request.constraint == TextConstraint(
            source=STORY, avoid=(earlier[0].text,), avoid_words=QUOTE_AVOID_WORDS, min_words=QUOTE_MIN_WORDS
        )
    assert argument.constraint == TextConstraint(avoid=(earlier[0].text,), avoid_words=8)
    assert speech.meta["constrained"] == {
        "quote_copied_from_excerpts": True,
        "avoid_words": {"quote": QUOTE_AVOID_WORDS, "argument": 8},
    }
    assert "<quote>Swarts told him he had been taken to a different era.</quote>" in speech.text


def test_constraints_are_off_when_asked_and_unrecorded_when_the_backend_ignores_them() -> None:
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY, constrain=False)
    assert plan.copy_from == "" and plan.avoid == ()
    assert plan.request(plan.prefill, SamplingParams(), plan.phases[0], 100).constraint is None

    class Ignoring(ConstrainedRecorder):
        honours_constraints = False

    model = Ignoring([("Swarts told him he had been taken to a different era.", "stop"), (" he travelled.", "stop")])
    speech = asyncio.run(
        generate_speech(model, plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY), SamplingParams())
    )
    assert "constrained" not in speech.meta


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        # Ended inside a word (no likely token went on with the story): the word goes, and it was never
        # shown; the quote stops inside its sentence, which an ellipsis says.
        ("Swarts told him he had been taken to a diff", "Swarts told him he had been taken to a…"),
        # Fewer than QUOTE_MIN_WORDS whole words left: no quote; the next sample is used.
        ("The year was fa", "The lawn outside was not part of the Reservation."),
    ],
)
def test_a_constrained_quote_cut_inside_a_word_loses_that_word_and_never_takes_back_what_was_shown(
    written: str, kept: str
) -> None:
    plan = plan_speech(STRUCTURED, "P", "- [p] x", _view(), STORY)
    model = ConstrainedRecorder(
        [(written, "stop"), ("The lawn outside was not part of the Reservation.", "stop"), (" he travelled.", "stop")]
    )
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    speech = asyncio.run(generate_speech(model, plan, SamplingParams(seed=2), on_delta=on_delta))
    assert f"<quote>{kept}</quote>" in speech.text
    assert "".join(pieces) == speech.text  # every piece shown is in the speech, in order
