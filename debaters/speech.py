"""How a debater's speech is asked for and finished: the speech styles (docs/protocols.md, "Speech structure").

A *style* turns a debater's view into a :class:`SpeechPlan`: the chat messages, an optional start of
the speech written by the project (the assistant-message *prefill*, which the backend continues),
and one or more generation *phases*, each with its own stop strings and token budget.
:func:`generate_speech` runs a plan on any :class:`~debaters.backends.base.ModelAPI`, so the same
structure works on every backend (a request whose last message is from the assistant asks the
backend to continue it; see :mod:`debaters.backends.base`).

Styles:

- ``free``: the v2 prompt (:func:`debaters.prompts.debater_messages`), one request, the model writes
  the whole speech. What every debate used before speech styles existed.
- ``structured``: :func:`debaters.prompts.structured_debater_messages`. The speech starts with the
  answer the debater defends, in words (prefill), and an opened ``<quote>``; phase 1 is the quote,
  which the model writes (copied from the excerpts it sees), stopped at ``</quote>`` or a blank
  line and cut to whole sentences; phase 2 is the argument, stopped at a blank line (where a small
  model starts pasting the story) or a new quote tag.
- ``evidence``: as ``structured``, and an *evidence tool* (BM25 over the story's sentences, for the
  question and the debater's answer) lists a few sentences under the excerpts; the model chooses
  which to quote and copies it itself. The sentences shown are recorded in the turn's meta.

Nothing here writes a quote for the model: the project writes only the prefill (the answer
statement, ``The text says:`` and the opening tag) and closes a quote the model stopped writing.

Every style ends a speech that ran into its token budget at the last sentence boundary (outside
quotes) and marks it ``cut`` (stored as the turn's ``meta["cut"]``), so a judge is told.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from debaters.backends.base import ChatMessage, Delta, Final, GenerateRequest, ModelAPI, SamplingParams
from debaters.backends.constraint import SEGMENT_BREAK, TextConstraint
from debaters.prompts import QUOTE_LEAD, DebaterView, debater_messages, structured_debater_messages
from debaters.quotes import SourceIndex, check_quotes, extract_quotes, normalize
from debaters.retrieval import EXCERPT_SEPARATOR, evidence_sentences

FREE = "free"
STRUCTURED = "structured"
EVIDENCE = "evidence"
SPEECH_STYLES: dict[str, str] = {
    FREE: "Free speech: the v2 prompt; the model writes the whole speech in one request.",
    STRUCTURED: (
        "Structured: the speech starts with the defended answer and an opened quote that the model "
        "writes from the excerpts; then the model argues. Stops at a closing quote tag and a blank line."
    ),
    EVIDENCE: (
        "Structured with an evidence tool: as structured, and a retrieval tool lists the story sentences "
        "that best match the question and the debater's answer; the model chooses which one to quote."
    ),
}
DEFAULT_STYLE = STRUCTURED
# After the quote the project writes these words, so the model explains the quote instead of
# copying more of the prompt; the argument stops at a line break or a new quote tag.
ARGUMENT_OPENING = "This shows that"
ARGUMENT_STOPS = ("\n", "<quote>", "The other answer is")
# How many sentences the evidence tool shows.
EVIDENCE_SENTENCES = 3
# A quote is cut to whole sentences within this many words (the default quote budget is 60 a speech).
QUOTE_MAX_WORDS = 40
QUOTE_MIN_WORDS = 5
QUOTE_MAX_TOKENS = 48
ELLIPSIS = "…"
# A constrained quote may not copy this many consecutive words of an earlier speech (its quote or
# its argument): quoting what the debate already quoted is a repeat, however it continues. Fewer
# than QUOTE_HOLD_WORDS, so a quote stopped by this rule is still unseen and sampled again.
QUOTE_AVOID_WORDS = 5
# An argument may not copy this many consecutive words of an earlier speech.
ARGUMENT_AVOID_WORDS = 8
# A quote the debate already used is sampled again up to this many times (repetition control).
QUOTE_RESAMPLES = 2
# A quote is shown once it has this many words, time enough to see that it repeats an earlier one.
QUOTE_HOLD_WORDS = 6


@dataclass(frozen=True)
class Phase:
    """One generation request of a speech: its stops, its share of the token budget, and how it ends.

    ``then`` is appended by the project after the phase (``</quote> `` closing the model's quote);
    ``quote`` marks the phase that writes the inside of a quote (cut to whole sentences, never empty).
    """

    stop: tuple[str, ...]
    max_tokens: int | None = None  # None: whatever the speech's budget has left
    then: str = ""
    quote: bool = False


@dataclass(frozen=True)
class SpeechPlan:
    style: str
    messages: tuple[ChatMessage, ...]  # ends with the assistant prefill when ``prefill`` is set
    prefill: str
    phases: tuple[Phase, ...]
    meta: dict[str, object] = field(default_factory=dict)
    sentence_cut: bool = True
    # Sentences of earlier speeches (normalised): a phase that repeats one ends before it.
    earlier: frozenset[str] = frozenset()
    # Quotes of earlier speeches (normalised): a quote phase that writes one again is resampled.
    used_quotes: frozenset[str] = frozenset()
    # Constrained decoding (debaters.backends.constraint), on backends that honour it: a quote is
    # copied token by token from ``copy_from`` (the passages the debater was shown), and no phase
    # repeats words of an earlier speech (``avoid``). Empty ``copy_from``: quotes are not constrained.
    copy_from: str = ""
    avoid: tuple[str, ...] = ()
    source: str = ""  # the whole story, which the referee checks quotes against

    def request(self, text: str, params: SamplingParams, phase: Phase, budget: int) -> GenerateRequest:
        """The request for ``phase`` after ``text`` was written (the prefill and earlier phases)."""
        messages = self.messages[:-1] + ({"role": "assistant", "content": text},) if self.prefill else self.messages
        limit = budget if phase.max_tokens is None else min(phase.max_tokens, budget)
        constraint = None
        if phase.quote and self.copy_from:
            constraint = TextConstraint(
                source=self.copy_from, avoid=self.avoid, avoid_words=QUOTE_AVOID_WORDS, min_words=QUOTE_MIN_WORDS
            )
        elif self.avoid and self.prefill:
            constraint = TextConstraint(avoid=self.avoid, avoid_words=ARGUMENT_AVOID_WORDS)
        params = params.replace(max_tokens=max(1, limit), stop=tuple(params.stop) + phase.stop)
        return GenerateRequest(messages, params, constraint)


def plan_speech(
    style: str, preamble: str, principles: str, view: DebaterView, source: str = "", *, constrain: bool = True
) -> SpeechPlan:
    """The plan of one speech in ``style``; ``source`` is the whole story (the evidence tool reads it,
    and a constrained quote is copied from it). ``constrain=False`` leaves decoding unconstrained."""
    if style == FREE:
        messages = debater_messages(preamble, principles, view)
        return SpeechPlan(FREE, tuple(messages), "", (Phase(stop=()),))
    if style not in SPEECH_STYLES:
        raise ValueError(f"unknown speech style {style!r}; known: {', '.join(SPEECH_STYLES)}")
    evidence: tuple[str, ...] = ()
    meta: dict[str, object] = {}
    if style == EVIDENCE:
        query = f"{view.question} {view.answers[view.side]}"
        evidence = tuple(evidence_sentences(source, query, EVIDENCE_SENTENCES))
        meta["evidence_tool"] = {"method": "bm25-sentences", "query": query, "sentences": list(evidence)}
    messages = structured_debater_messages(preamble, principles, view, evidence=evidence)
    phases = (
        Phase(stop=("</quote>",), max_tokens=QUOTE_MAX_TOKENS, then=f"</quote> {ARGUMENT_OPENING}", quote=True),
        Phase(stop=ARGUMENT_STOPS),
    )
    earlier = frozenset(key for speech in view.transcript for key in _sentence_keys(speech.text))
    used = frozenset(normalize(q) for speech in view.transcript for _, _, q in extract_quotes(speech.text))
    avoid = tuple(speech.text for speech in view.transcript) if constrain else ()
    return SpeechPlan(
        style,
        tuple(messages),
        messages[-1]["content"],
        phases,
        meta,
        earlier=earlier,
        used_quotes=used,
        copy_from=SEGMENT_BREAK.join([view.excerpts.replace(EXCERPT_SEPARATOR, SEGMENT_BREAK), *evidence])
        if constrain
        else "",
        avoid=avoid,
        source=source,
    )


# --- Ends of speeches ---------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s|$)""")
# A sentence end followed by white space: the sentence is complete while text is still streaming in.
_SENTENCE_DONE = re.compile(r"""[.!?…]+["'”’)\]]*\s""")
_ENDS_SENTENCE = re.compile(r"""[.!?…]["'”’)\]]*$""")
_QUOTE_TAGS = re.compile(r"<\s*/?\s*quote\s*>", re.IGNORECASE)


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends at the end of a sentence; ``….</quote>`` counts (the quote ends one)."""
    bare = _QUOTE_TAGS.sub("", text).rstrip()
    return _ENDS_SENTENCE.search(bare) is not None


def cut_to_sentence(text: str, floor: int = 0) -> str:
    """``text`` up to its last sentence end at or after ``floor``, never inside a quote element.

    A quote element whose inside ends a sentence counts as a sentence end. Returns ``text``
    unchanged when no sentence ends there (the caller marks such a speech cut).
    """
    quotes = [(s, e) for s, e, _ in extract_quotes(text)]
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if not any(s < m.end() < e for s, e in quotes)]
    ends += [e for s, e in quotes if _ENDS_SENTENCE.search(_QUOTE_TAGS.sub("", text[s:e]).rstrip())]
    ends = [e for e in ends if e >= floor]
    return text[: max(ends)] if ends else text


# A repeated sentence shorter than this (normalised words) is not a repeat worth cutting ("I agree.").
REPEAT_MIN_WORDS = 4


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``; the tail after the last sentence end is one too."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _sentence_keys(text: str) -> set[str]:
    keys = {normalize(_QUOTE_TAGS.sub(" ", text[s:e])) for s, e in _sentences(text)}
    return {k for k in keys if len(k.split()) >= REPEAT_MIN_WORDS}


def _live_quote(raw: str, *, final: bool) -> tuple[str, bool]:
    """The quote in the model's text so far, and whether it is complete: its first line before any
    tag, up to its first sentence end once that holds ``QUOTE_MIN_WORDS`` words, at most
    ``QUOTE_MAX_WORDS`` words.

    Only ever grows as ``raw`` grows, so what was shown of it is never taken back.
    """
    body = raw.lstrip()
    complete = final
    # A quote ends at its first line break, and before any tag: quotes hold text, never markup.
    ends = [i for i in (body.find("\n"), body.find("<")) if i >= 0]
    if ends:
        body, complete = body[: min(ends)], True
    for match in (_SENTENCE_END if complete else _SENTENCE_DONE).finditer(body):
        end = match.end() if complete else match.end() - 1
        if len(body[:end].split()) >= QUOTE_MIN_WORDS:
            return body[:end].rstrip(), True
    words = list(re.finditer(r"\S+", body))
    if len(words) >= QUOTE_MAX_WORDS and (complete or len(words) > QUOTE_MAX_WORDS):
        return body[: words[QUOTE_MAX_WORDS - 1].end()], True
    return body.rstrip(), complete


def _starts_like(quote: str, used: frozenset[str]) -> bool:
    """Whether ``quote`` begins like (or is the start of) a quote in ``used`` (normalised)."""
    key = normalize(quote)
    return bool(key) and any(u.startswith(key) or key.startswith(u) for u in used if u)


def _last_word_start(text: str) -> int:
    match = re.search(r"\S+$", text)
    return match.start() if match else len(text)


def _whole_words(quote: str, source: SourceIndex) -> str:
    """A constrained quote as the referee will see it: a quote that ended inside a word (none of the
    model's likeliest tokens went on with the story) loses that word; shorter than
    ``QUOTE_MIN_WORDS`` words it is no quote (sampled again)."""
    for candidate in (quote, re.sub(r"\s*\S+$", "", quote)):
        if len(candidate.split()) < QUOTE_MIN_WORDS:
            return ""
        if all(check.verified for check in check_quotes(f"<quote>{candidate}</quote>", source)):
            return candidate
    return quote


# --- Running a plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """A finished speech. ``final`` carries the token counts (all phases) and the last finish reason."""

    text: str
    final: Final
    cut: bool
    meta: dict[str, object]


DeltaSink = Callable[[str], Awaitable[None]]
ResetSink = Callable[[str, str], Awaitable[None]]


async def generate_speech(
    model: ModelAPI,
    plan: SpeechPlan,
    params: SamplingParams,
    *,
    on_delta: DeltaSink | None = None,
    on_reset: ResetSink | None = None,
) -> Speech:
    """Run ``plan``, streaming the speech to ``on_delta``; ``params.max_tokens`` budgets the whole speech.

    A structured speech never takes back what it showed: its answer statement is shown at once; the
    quote (with ``The text says:`` and its tags) once the model has written it and it is trimmed;
    the argument sentence by sentence, each once it is complete and no repeat. A free speech streams
    token by token; if it must then end at an earlier sentence boundary, ``on_reset(text, reason)``
    receives the whole kept text so the stream can be replaced.
    """
    text = plan.prefill
    shown = ""
    budget = params.max_tokens
    prompt_tokens = 0
    completion_tokens = 0
    finish = "stop"
    meta = dict(plan.meta)
    if model.honours_constraints and (plan.copy_from or plan.avoid):
        # The transcript says how the speech was decoded (docs/protocols.md, "Constrained decoding").
        meta["constrained"] = {
            "quote_copied_from_excerpts": bool(plan.copy_from),
            "avoid_words": {"quote": QUOTE_AVOID_WORDS, "argument": ARGUMENT_AVOID_WORDS} if plan.avoid else None,
        }
    constrained = model.honours_constraints and bool(plan.copy_from)
    index: list[SourceIndex] = []

    def source_index() -> SourceIndex:
        if not index:
            index.append(SourceIndex(plan.source or plan.copy_from.replace(SEGMENT_BREAK, "\n\n")))
        return index[0]

    async def show(upto: str) -> None:
        """Emit what of ``upto`` (the speech so far) is not shown yet; shown text is always its prefix.

        Trailing white space waits for the text after it, so a speech never ends in a space it showed.
        """
        nonlocal shown
        upto = upto.rstrip()
        piece = upto[len(shown) :]
        if piece:
            shown = upto
            if on_delta is not None:
                await on_delta(piece)

    def request_for(phase: Phase, seed_offset: int) -> GenerateRequest:
        request = plan.request(text, params, phase, budget)
        if seed_offset and request.params.seed is not None:
            request = dataclasses.replace(
                request, params=request.params.replace(seed=request.params.seed * 10 + seed_offset)
            )
        return request

    async def quote_phase(phase: Phase, seed_offset: int, last: bool) -> tuple[str, int, int]:
        """Stream the model's quote live, trimmed as it comes (``_live_quote``); ``(quote, prompt, completion)``.

        Nothing is shown until the quote has ``QUOTE_HOLD_WORDS`` words (or is complete), so a quote
        that starts like one this debate already used is dropped unseen and sampled again, unless
        ``last``; an empty quote is never shown either.
        """
        raw, quote, started = "", "", False
        final: Final | None = None
        async with aclosing(model.generate(request_for(phase, seed_offset))) as items:
            async for item in items:
                if isinstance(item, Final):
                    final = item
                    continue
                raw += item.text
                quote, complete = _live_quote(raw, final=False)
                if not started:
                    if not complete and len(quote.split()) < QUOTE_HOLD_WORDS:
                        continue
                    if not last and _starts_like(quote, plan.used_quotes):
                        return "", 0, model.count_tokens(raw)
                    started = True
                # A constrained quote may yet end inside its last word (debaters.backends.constraint):
                # that word is shown once the next one starts, so what is shown is never taken back.
                await show(text + (quote if complete or not constrained else quote[: _last_word_start(quote)]))
                if complete:
                    return quote, 0, model.count_tokens(raw)
        assert final is not None
        quote, _ = _live_quote(raw, final=True)
        if quote and constrained:
            quote = _whole_words(quote, source_index())
        if quote and not started and not last and _starts_like(quote, plan.used_quotes):
            return "", final.prompt_tokens, final.completion_tokens
        if quote:
            await show(text + quote)
        return quote, final.prompt_tokens, final.completion_tokens

    async def free_phase(phase: Phase) -> Final:
        final: Final | None = None
        async for item in model.generate(request_for(phase, 0)):
            if isinstance(item, Delta):
                await show(shown + item.text)
            else:
                final = item
        assert final is not None
        return final

    async def argument_phase(phase: Phase) -> Final:
        """Show the argument by whole sentences; stop at a repeated sentence; drop an unfinished end."""
        seen = set(plan.earlier) | _sentence_keys(text[len(plan.prefill) :])
        accepted, buffer = "", ""
        final: Final | None = None
        async with aclosing(model.generate(request_for(phase, 0))) as items:
            async for item in items:
                if isinstance(item, Final):
                    final = item
                    continue
                buffer += item.text
                while (done := _SENTENCE_DONE.search(buffer)) is not None:
                    sentence, buffer = buffer[: done.end()], buffer[done.end() :]
                    key = normalize(_QUOTE_TAGS.sub(" ", sentence))
                    if len(key.split()) >= REPEAT_MIN_WORDS and key in seen:
                        meta["repeat_cut"] = {"sentence": " ".join(sentence.split())[:200]}
                        return Final(accepted, 0, model.count_tokens(accepted + sentence), "stop")
                    seen.add(key)
                    accepted += sentence
                    await show(text + accepted)
        assert final is not None
        tail = buffer.strip()
        key = normalize(_QUOTE_TAGS.sub(" ", tail))
        if tail and not _ENDS_SENTENCE.search(tail):
            meta["trimmed"] = {"dropped_chars": len(tail)}  # an unfinished sentence is never shown
        elif len(key.split()) >= REPEAT_MIN_WORDS and key in seen:
            meta["repeat_cut"] = {"sentence": tail[:200]}
        elif tail:
            accepted += buffer
            await show(text + accepted.rstrip())
        return Final(accepted, final.prompt_tokens, final.completion_tokens, final.finish_reason)

    lead = plan.prefill.rfind(QUOTE_LEAD) if plan.phases[0].quote else -1
    await show(plan.prefill[:lead].rstrip() if lead > 0 else plan.prefill)
    for number, phase in enumerate(plan.phases):
        if budget <= 0:
            finish = "length"
            break
        if phase.quote:
            quote = ""
            for attempt in range(1 + QUOTE_RESAMPLES):
                quote, prompt, spent = await quote_phase(phase, attempt, last=attempt == QUOTE_RESAMPLES)
                prompt_tokens = prompt_tokens or prompt
                completion_tokens += spent
                budget -= spent
                if quote or budget <= 0:
                    break
                # Repetition control: an empty quote, or one this debate already used, is sampled again.
                meta["quote_resamples"] = attempt + 1
            if not quote:
                # The model wrote no quote: the lead and the opened tag go (they were never shown).
                text = plan.prefill[:lead].rstrip() + " "
                meta["quote"] = "none written"
                continue
            # A quote that stops inside its sentence says so, as quoting does: an ellipsis (which the
            # referee's comparison ignores). The speech then ends at a sentence boundary even when
            # no argument follows.
            text += quote + ("" if _ENDS_SENTENCE.search(quote.rstrip()) else ELLIPSIS) + "</quote>"
            await show(text)
            text += phase.then[len("</quote>") :]
            continue
        final = await (argument_phase(phase) if plan.prefill else free_phase(phase))
        prompt_tokens = prompt_tokens or final.prompt_tokens
        completion_tokens += final.completion_tokens
        budget -= final.completion_tokens
        finish = final.finish_reason
        text += final.text
    text = text.rstrip()
    if plan.prefill and text.endswith(ARGUMENT_OPENING):
        # Written for the model; without an argument after it, it is no part of the speech.
        text = text[: -len(ARGUMENT_OPENING)].rstrip()
    cut = finish == "length"
    if plan.sentence_cut and not plan.prefill and not ends_sentence(text):
        kept = cut_to_sentence(text)
        if kept != text:
            meta["trimmed"] = {"dropped_chars": len(text) - len(kept)}
            text = kept
    if cut:
        meta["cut"] = {"reason": "max_tokens", "ends_sentence": ends_sentence(text)}
    if shown.rstrip() != text and on_reset is not None:
        # Only a free speech gets here: it streamed token by token and ends at an earlier sentence.
        await on_reset(text, "cut at the token limit: ended at the last whole sentence")
    return Speech(
        text=text,
        final=Final(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, finish_reason=finish),
        cut=cut,
        meta=meta,
    )
