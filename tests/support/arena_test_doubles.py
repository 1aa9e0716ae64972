"""Test doubles. Never registered by the product: tests add them through ARENA_BACKENDS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from debaters.backends.base import BackendError, ChatMessage, Delta, Final, GenerateRequest, ModelAPI, StreamItem


class ScriptedBackend(ModelAPI):
    """Streams a fixed speech word by word.

    Options: ``text`` (the speech; ``{side}`` is not interpolated — the speech is the same for
    every request unless ``texts`` lists one per call), ``delay_s`` between words, ``fail``
    ("permanent" or "transient": every call raises), ``fail_after_words`` (raise a transient error
    mid-stream, once per instance).
    """

    def __init__(self, spec) -> None:  # type: ignore[no-untyped-def]
        super().__init__(spec)
        self.calls: list[GenerateRequest] = []
        self._failed_midstream = False

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        self.calls.append(request)
        opts = self.spec.options
        if opts.get("fail"):
            raise BackendError(f"scripted {opts['fail']} failure", permanent=opts["fail"] == "permanent")
        texts = opts.get("texts")
        text = str(texts[(len(self.calls) - 1) % len(texts)]) if texts else str(opts.get("text", "I argue <quote>There was a thump.</quote> so my answer holds."))
        words = text.split(" ")
        delay = float(opts.get("delay_s", 0.0))
        fail_after = opts.get("fail_after_words")
        out = ""
        for i, word in enumerate(words):
            if fail_after is not None and i == int(fail_after) and not self._failed_midstream:
                self._failed_midstream = True
                raise BackendError("scripted connection lost mid-stream")
            piece = word if i == 0 else " " + word
            out += piece
            if delay:
                await asyncio.sleep(delay)
            yield Delta(piece)
        yield Final(text=out, prompt_tokens=sum(len(m["content"].split()) for m in request.messages), completion_tokens=len(words), finish_reason="stop")

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        return [1.0 / len(labels)] * len(labels)
