"""The vllm backend without vLLM: import guards, the prefork guard in a real billiard child, the pure
request conversions, and the batching and error handling against a stand-in ``vllm`` module.

vLLM is not installed here (it pins torch and transformers versions that the CPU install cannot take)
and there is no GPU, so the engine is replaced at the import edge by ``tests/support/vllm_standin.py``:
written from vLLM 0.33.0's source, its ``SamplingParams``, ``LLM.chat``, outputs and exceptions take
the same fields and refuse the same requests with the same classes and messages, so a request the
real engine would refuse fails here too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import vllm_standin
from vllm_standin import LLM, CompletionOutput, Logprob, RequestOutput, StandIn, render, tokenize

from debaters.backends import backend_class
from debaters.backends.base import BackendError, BackendSpec, Delta, Final, GenerateRequest, SamplingParams
from debaters.backends.resilient import ResilientModel
from debaters.backends.vllm_backend import (
    INSTALL_HINT,
    MULTIPROC_ENV,
    VLLMBackend,
    VLLMErrorKinds,
    VLLMOptions,
    choice_sampling_kwargs,
    conversation,
    engine_kwargs,
    final_from_output,
    fork_hazard,
    label_probs,
    vllm_sampling_kwargs,
)

ROOT = Path(__file__).resolve().parents[2]

def _spec(**options: object) -> BackendSpec:
    return BackendSpec(backend="vllm", model="org/some-model", options=options)


def _request(text: str, **params: object) -> GenerateRequest:
    return GenerateRequest(
        messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": text}),
        params=SamplingParams(max_tokens=5, temperature=0.0).replace(**params),
    )


# ----- imports -----


def test_it_imports_neither_vllm_nor_torch_when_the_module_or_the_registry_loads_it() -> None:
    code = (
        "import sys\n"
        "from debaters.backends import backend_class\n"
        "cls = backend_class('vllm')\n"
        "from debaters.backends.base import BackendSpec\n"
        "cls(BackendSpec(backend='vllm', model='x', options={'tensor_parallel_size': 2}))\n"
        "print(cls.__name__, 'vllm' in sys.modules, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["VLLMBackend", "False", "False", "False"]


def test_it_resolves_through_the_registry_so_profiles_validate_in_the_web_process() -> None:
    from debaters.models import DebaterProfile

    assert backend_class("vllm") is VLLMBackend
    DebaterProfile(name="gpu", backend="vllm", model="org/model", sampling={"temperature": 0.5}).clean()


@pytest.mark.asyncio
async def test_it_names_the_install_command_when_vllm_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    backend = VLLMBackend(_spec())
    with pytest.raises(BackendError) as info:
        await backend.complete(_request("hi"))
    assert info.value.permanent
    assert "pip install 'debate-arena[vllm]'" in info.value.message and "separate environment" in info.value.message
    assert INSTALL_HINT in info.value.message
    with pytest.raises(BackendError) as ready:
        await backend.wait_ready()
    assert ready.value.permanent
    await backend.aclose()


# ----- the prefork guard, in a real billiard child (what Celery's prefork pool runs tasks in) -----


def _in_daemonic_child(queue) -> None:  # type: ignore[no-untyped-def]
    backend = VLLMBackend(_spec())
    try:
        asyncio.run(backend.complete(_request("hi")))
        queue.put(("no error", False, "", "vllm" in sys.modules))
    except BackendError as exc:
        queue.put((type(exc).__name__, exc.permanent, exc.message, "vllm" in sys.modules))


def test_it_refuses_to_start_the_engine_in_a_prefork_pool_child() -> None:
    import billiard

    assert fork_hazard() is None  # the test process itself could start it
    ctx = billiard.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_daemonic_child, args=(queue,), daemon=True)
    child.start()
    try:
        kind, permanent, message, imported_vllm = queue.get(timeout=60)
    finally:
        child.join(30)
    assert kind == "BackendError" and permanent
    assert "daemonic" in message and "--pool=solo" in message and "vllm serve" in message
    assert not imported_vllm  # it failed before trying the (absent) engine


# ----- pure conversions -----


def test_it_sets_every_sampling_field_explicitly_and_vllm_takes_them() -> None:
    kwargs = vllm_sampling_kwargs(SamplingParams(max_tokens=40, temperature=0.7, top_p=0.9, seed=12, stop=("\n\n", "")))
    vllm_standin.SamplingParams(**kwargs)  # 0.33's field names and ranges (an empty stop would be refused)
    assert kwargs["max_tokens"] == 40 and kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9
    assert kwargs["seed"] == 12 and kwargs["stop"] == ["\n\n"]
    # What generation_config.json could otherwise supply as defaults is pinned to "off".
    assert (kwargs["top_k"], kwargs["min_p"], kwargs["repetition_penalty"]) == (0, 0.0, 1.0)
    assert (kwargs["presence_penalty"], kwargs["frequency_penalty"], kwargs["n"]) == (0.0, 0.0, 1)
    assert kwargs["include_stop_str_in_output"] is False and kwargs["ignore_eos"] is False
    assert vllm_sampling_kwargs(SamplingParams())["stop"] is None


def test_it_refuses_sampling_that_vllm_would_reject_as_a_permanent_error() -> None:
    with pytest.raises(vllm_standin.VLLMValidationError, match=r"temperature must be in \[0, 2\], got 3.0"):
        vllm_standin.SamplingParams(temperature=3.0)
    with pytest.raises(BackendError) as hot:
        vllm_sampling_kwargs(SamplingParams(temperature=3.0))
    assert hot.value.permanent and "temperature 3 is above 2" in hot.value.message and "vLLM 0.33" in hot.value.message
    with pytest.raises(BackendError) as bad:
        vllm_sampling_kwargs(SamplingParams(max_tokens=0))
    assert bad.value.permanent and "max_tokens" in bad.value.message


def test_it_asks_for_greedy_top_logprobs_for_choices_within_the_cap() -> None:
    kwargs = choice_sampling_kwargs(max_logprobs=5)
    vllm_standin.SamplingParams(**kwargs)
    assert (kwargs["max_tokens"], kwargs["logprobs"], kwargs["temperature"], kwargs["top_p"]) == (1, 5, 0.0, 1.0)
    assert choice_sampling_kwargs(max_logprobs=100)["logprobs"] == 20


def test_it_converts_chat_messages_and_rejects_bad_ones() -> None:
    messages = ({"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"})
    assert conversation(messages) == [dict(m) for m in messages]
    for bad in ((), ({"role": "tool", "content": "x"},), ({"role": "user", "content": None},)):
        with pytest.raises(BackendError) as info:
            conversation(bad)  # type: ignore[arg-type]
        assert info.value.permanent


def test_it_builds_engine_arguments_and_validates_options() -> None:
    options = VLLMOptions.from_spec(_spec(tensor_parallel_size=2, max_model_len=4096, engine_args={"enable_prefix_caching": True}))
    kwargs = engine_kwargs("org/m", options)
    assert kwargs == {
        "model": "org/m", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.9, "dtype": "auto",
        "max_logprobs": 20, "enforce_eager": False, "max_model_len": 4096, "enable_prefix_caching": True,
    }
    for bad, needle in (
        ({"device": "cuda"}, "unknown option"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"dtype": "int4"}, "dtype"),
        ({"engine_args": {"model": "other"}}, "may not set model"),
        ({"engine_args": {"trust_remote_code": True}}, "trust_remote_code"),
        ({"engine_args": []}, "JSON object"),
    ):
        with pytest.raises(BackendError) as info:
            VLLMBackend(_spec(**bad))
        assert info.value.permanent and needle in info.value.message


def _output(text: str, n_tokens: int, reason: str | None, prompt: int = 7) -> RequestOutput:
    completion = CompletionOutput(0, text, list(range(n_tokens)), None, None, finish_reason=reason)
    return RequestOutput("0", None, list(range(prompt)), None, [completion], finished=True)


def test_it_reads_finals_from_request_outputs() -> None:
    assert final_from_output(_output("Hi there", 3, "stop")) == Final("Hi there", 7, 3, "stop")
    assert final_from_output(_output("Hi", 5, "length")).finish_reason == "length"
    empty = RequestOutput("0", None, [1], None, [], finished=True)
    for broken in (_output("x", 1, "abort"), _output("x", 1, "error"), _output("x", 1, None), empty):
        with pytest.raises(BackendError) as info:
            final_from_output(broken)
        assert not info.value.permanent


def test_it_scores_labels_from_top_logprobs() -> None:
    top = {
        10: Logprob(math.log(0.5), 1, " A"),
        11: Logprob(math.log(0.2), 2, "B"),
        12: Logprob(math.log(0.1), 3, "A"),
        13: Logprob(math.log(0.1), 4, "The"),
    }
    assert label_probs(top, ["A", "B"]) == pytest.approx([0.6 / 0.8, 0.2 / 0.8])
    assert sum(label_probs(top, ["B", "A"])) == pytest.approx(1.0)
    with pytest.raises(BackendError) as info:
        label_probs(top, ["C", "D"])
    assert info.value.permanent and "'The'" in info.value.message


def test_it_classifies_errors_as_vllm_0_33_s_server_does() -> None:
    # In 0.33 a validation error is not a ValueError: VLLMValidationError -> VLLMClientError -> VLLMError.
    assert not issubclass(vllm_standin.VLLMValidationError, ValueError)
    kinds = VLLMErrorKinds(
        client=(vllm_standin.VLLMClientError,), graceful=(vllm_standin.GracefulHTTPError,), dead=(vllm_standin.EngineDeadError,)
    )
    too_long = vllm_standin.VLLMValidationError("prompt too long", parameter="input_tokens", value=9000)
    assert kinds.classify(too_long).permanent and "(parameter=input_tokens, value=9000)" in kinds.classify(too_long).message
    for permanent in (ValueError("bad"), TypeError("bad"), NotImplementedError("no")):
        assert kinds.classify(permanent).permanent
    for transient in (vllm_standin.QueueOverflowError(), vllm_standin.VLLMServerError("oops"), RuntimeError("CUDA error")):
        assert not kinds.classify(transient).permanent
    assert kinds.is_dead(vllm_standin.EngineDeadError()) and not kinds.is_dead(RuntimeError())
    # Before vLLM is imported nothing vLLM-specific is known; a client error is then not recognised.
    assert not VLLMErrorKinds().classify(too_long).permanent


# ----- batching and failures, against the vLLM 0.33 stand-in -----


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    return vllm_standin.install(monkeypatch)


def _prompt_tokens(request: GenerateRequest) -> int:
    return len(tokenize(render(request.messages)))


@pytest.mark.asyncio
async def test_it_runs_a_round_as_one_chat_call_with_per_request_sampling(standin: StandIn) -> None:
    backend = VLLMBackend(_spec(max_model_len=2048))
    requests = [_request("abc", seed=1), _request("hello world", seed=2, max_tokens=4), _request("xy!z", temperature=0.5, stop=("!", ""))]
    finals = await backend.generate_batch(requests)
    assert [f.text for f in finals] == ["cba", "dlro", "z"]
    assert [f.finish_reason for f in finals] == ["stop", "length", "stop"]
    assert finals[0].completion_tokens == 4 and finals[0].prompt_tokens == _prompt_tokens(requests[0])
    (llm,) = standin.engines
    assert llm.model == "org/some-model" and llm.max_model_len == 2048
    (messages, params) = llm.calls[0]
    assert len(llm.calls) == 1 and len(messages) == 3
    assert messages[1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    assert [p.stop for p in params] == [[], [], ["!"]]  # the empty stop string never reached vLLM
    assert backend.batch_sizes == [3]
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_joins_concurrent_streams_into_one_call_and_yields_one_delta(standin: StandIn) -> None:
    backend = VLLMBackend(_spec(batch_wait_ms=100))
    await backend.wait_ready()

    async def stream(text: str) -> tuple[list[str], Final]:
        deltas: list[str] = []
        final: Final | None = None
        async for item in backend.generate(_request(text, max_tokens=50)):
            if isinstance(item, Delta):
                deltas.append(item.text)
            else:
                final = item
        assert final is not None
        return deltas, final

    results = await asyncio.gather(*(stream(t) for t in ("one", "two", "three", "four")))
    assert [(d, f.text) for d, f in results] == [(["eno"], "eno"), (["owt"], "owt"), (["eerht"], "eerht"), (["ruof"], "ruof")]
    assert backend.batch_sizes == [4]
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_scores_choices_greedily_from_the_engines_top_logprobs(standin: StandIn) -> None:
    backend = VLLMBackend(_spec(max_logprobs=8))
    messages = [{"role": "user", "content": "A or B?"}]
    probs = [await backend.choice_probs(messages, ["A", "B"]) for _ in range(3)]  # type: ignore[arg-type]
    # The top 8 first tokens: " A" 0.30 + "A" 0.05 against " B" 0.10 + "B" 0.03, every time.
    assert probs == [pytest.approx([0.35 / 0.48, 0.13 / 0.48])] * 3
    (_, params) = standin.engines[0].calls[0]
    assert (params[0].logprobs, params[0].max_tokens, params[0].temperature) == (8, 1, 0.0)
    with pytest.raises(BackendError) as info:
        await backend.choice_probs(messages, ["C", "D"])  # type: ignore[arg-type]
    assert info.value.permanent
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_fails_only_the_request_that_broke_a_batch_and_never_retries_it(standin: StandIn) -> None:
    backend = VLLMBackend(_spec(batch_wait_ms=100, max_model_len=200))
    model = ResilientModel(backend, max_retries=3)
    await backend.wait_ready()
    texts = [f"fine {i}" for i in range(8)]
    texts[5] = "x" * 300  # longer than max_model_len
    results = await asyncio.gather(*(model.complete(_request(t, max_tokens=50)) for t in texts), return_exceptions=True)
    assert [r.text for i, r in enumerate(results) if i != 5] == [t[::-1] for i, t in enumerate(texts) if i != 5]  # type: ignore[union-attr]
    error = results[5]
    assert isinstance(error, BackendError) and error.permanent
    assert "maximum context length is 200 tokens" in error.message and "VLLMValidationError" in error.message
    # One call of 8 failed; halving isolated the long prompt: [0-3] and [6-7] ran as batches, the
    # long prompt alone once, and nothing was retried.
    sizes = [len(conversations) for conversations, _ in standin.engines[0].calls]
    assert sizes == [8, 4, 4, 2, 1, 1, 2]
    assert sum(1 for conversations, _ in standin.engines[0].calls if any(c[-1]["content"] == texts[5] for c in conversations)) == 4
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_refuses_a_prompt_that_fills_the_context_and_too_many_logprobs(standin: StandIn) -> None:
    backend = VLLMBackend(_spec(max_model_len=60))
    request = _request("")
    filler = 60 - _prompt_tokens(request)
    with pytest.raises(BackendError) as full:
        await backend.complete(_request("y" * filler))
    assert full.value.permanent and "plus the number of requested output tokens (at least 1)" in full.value.message
    await backend.aclose()
    llm = LLM("m", max_model_len=100, max_logprobs=5)
    with pytest.raises(vllm_standin.VLLMValidationError, match="Requested sample logprobs of 6, which is greater than max allowed: 5"):
        llm.chat([{"role": "user", "content": "x"}], vllm_standin.SamplingParams(max_tokens=1, logprobs=6))


@pytest.mark.asyncio
async def test_it_fails_a_busy_call_transiently_without_splitting_it(standin: StandIn) -> None:
    backend = VLLMBackend(_spec(batch_wait_ms=100))
    await backend.wait_ready()
    standin.engines[0].fail_next.append(vllm_standin.QueueOverflowError())
    results = await asyncio.gather(*(backend.complete(_request(t)) for t in ("a", "b", "c")), return_exceptions=True)
    assert all(isinstance(r, BackendError) and not r.permanent and "busy" in r.message for r in results)
    assert [len(c) for c, _ in standin.engines[0].calls] == [3]
    assert _texts(await backend.generate_batch([_request("ab")])) == ["ba"]  # the engine serves on
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_starts_a_new_engine_after_the_engine_died(standin: StandIn) -> None:
    backend = VLLMBackend(_spec())
    await backend.wait_ready()
    standin.engines[0].fail_next.append(vllm_standin.EngineDeadError())
    with pytest.raises(BackendError) as info:
        await backend.complete(_request("a"))
    assert not info.value.permanent and "engine died" in info.value.message
    assert _texts(await backend.generate_batch([_request("ab")])) == ["ba"]
    assert len(standin.engines) == 2
    await backend.aclose()


@pytest.mark.asyncio
async def test_an_ending_engine_refuses_jobs_instead_of_losing_them(standin: StandIn) -> None:
    # Jobs handed to an engine after its thread took its last ones would never be answered: the
    # engine refuses them and the backend sends them to a new engine.
    backend = VLLMBackend(_spec())
    await backend.wait_ready()
    old = backend._engine
    assert old is not None
    old.stop()
    old.join(5)
    assert old.closed and old.submit([]) is False
    backend._engine = old  # as a caller that fetched it just before it ended would still hold it
    assert _texts(await backend.generate_batch([_request("ab")])) == ["ba"]
    assert backend._engine is not old and len(standin.engines) == 2
    await backend.aclose()


@pytest.mark.asyncio
async def test_a_request_right_after_the_engine_died_goes_to_a_new_engine(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    # The dying engine's thread is still finishing when its requests hear of the death (held here
    # in _drain): the next request must start a new engine, not join the old one's last drain.
    from debaters.backends import vllm_backend

    finishing = threading.Event()
    drain = vllm_backend._Engine._drain

    def slow_drain(self: vllm_backend._Engine) -> list:
        finishing.wait(timeout=2)
        return drain(self)

    monkeypatch.setattr(vllm_backend._Engine, "_drain", slow_drain)
    backend = VLLMBackend(_spec())
    await backend.wait_ready()
    standin.engines[0].fail_next.append(vllm_standin.EngineDeadError())
    with pytest.raises(BackendError):
        await backend.complete(_request("a"))
    try:
        assert _texts(await backend.generate_batch([_request("ab")])) == ["ba"]
    finally:
        finishing.set()
    assert len(standin.engines) == 2
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_starts_vllm_workers_with_spawn_unless_told_otherwise(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = VLLMBackend(_spec())
    await backend.wait_ready()
    assert standin.engines[0].multiproc_method == "spawn"  # set before vllm.LLM(...) was built
    await backend.aclose()
    monkeypatch.setenv(MULTIPROC_ENV, "fork")
    with caplog.at_level(logging.WARNING, logger="debaters.backends.vllm_backend"):
        await backend.wait_ready()
    assert standin.engines[1].multiproc_method == "fork"
    assert "can deadlock" in caplog.text
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_refuses_a_temperature_above_two_before_the_engine_sees_it(standin: StandIn) -> None:
    backend = VLLMBackend(_spec())
    with pytest.raises(BackendError) as info:
        await backend.complete(_request("a", temperature=2.5))
    assert info.value.permanent and "temperature 2.5 is above 2" in info.value.message
    assert standin.engines == []  # refused before the engine was even started
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_reports_a_model_that_fails_to_load_as_permanent(standin: StandIn) -> None:
    standin.fail_load = RuntimeError("No CUDA GPUs are available")
    backend = VLLMBackend(_spec())
    with pytest.raises(BackendError) as info:
        await backend.generate_batch([_request("a"), _request("b")])
    assert info.value.permanent and "No CUDA GPUs" in info.value.message and "org/some-model" in info.value.message
    await backend.aclose()


def _texts(finals: Sequence[Final]) -> list[str]:
    return [f.text for f in finals]


@pytest.mark.asyncio
async def test_it_serves_again_after_close_and_ignores_an_empty_batch(standin: StandIn) -> None:
    backend = VLLMBackend(_spec())
    assert await backend.generate_batch([]) == []
    assert _texts(await backend.generate_batch([_request("ab")])) == ["ba"]
    await backend.aclose()
    await backend.aclose()  # twice is fine
    assert _texts(await backend.generate_batch([_request("cd")])) == ["dc"]
    assert len(standin.engines) == 2  # a fresh engine after the close
    await backend.aclose()


def test_it_counts_tokens_with_an_estimate_when_no_tokenizer_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = VLLMBackend(BackendSpec(backend="vllm", model=os.devnull + "/no-such-model", options={}))
    assert backend.count_tokens("x" * 40) == 10


def test_it_counts_tokens_with_the_models_own_tokenizer() -> None:
    from transformers import AutoTokenizer

    from debaters.embedded import ensure_converted

    text = "The moon is made of cheese, said the debater."
    expected = len(AutoTokenizer.from_pretrained(str(ensure_converted(progress=False))).encode(text, add_special_tokens=False))
    assert VLLMBackend(BackendSpec(backend="vllm", model="embedded", options={})).count_tokens(text) == expected
