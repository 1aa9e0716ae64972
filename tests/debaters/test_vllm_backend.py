"""The vllm backend without vLLM: import guards, the prefork guard in a real billiard child, the pure
request conversions, and the batching logic against a stand-in ``vllm`` module.

vLLM is not installed here (it pins torch and transformers versions that the CPU install cannot take)
and there is no GPU, so the engine itself is replaced at the import edge: the tests put a small
``vllm`` module with ``LLM`` and ``SamplingParams`` into ``sys.modules``. Its ``SamplingParams`` takes
only field names that vLLM 0.33's has, so a misspelt keyword fails here as it would on a GPU box.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from debaters.backends import backend_class
from debaters.backends.base import BackendError, BackendSpec, Delta, Final, GenerateRequest, SamplingParams
from debaters.backends.vllm_backend import (
    INSTALL_HINT,
    VLLMBackend,
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

# vllm.SamplingParams fields (vLLM 0.33) that this backend may set.
VLLM_SAMPLING_FIELDS = frozenset(
    {
        "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
        "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
        "prompt_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
        "include_stop_str_in_output",
    }
)


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


def test_it_sets_every_sampling_field_explicitly() -> None:
    kwargs = vllm_sampling_kwargs(SamplingParams(max_tokens=40, temperature=0.7, top_p=0.9, seed=12, stop=("\n\n", "")))
    assert set(kwargs) <= VLLM_SAMPLING_FIELDS
    assert kwargs["max_tokens"] == 40 and kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9
    assert kwargs["seed"] == 12 and kwargs["stop"] == ["\n\n"]
    # What generation_config.json could otherwise supply as defaults is pinned to "off".
    assert (kwargs["top_k"], kwargs["min_p"], kwargs["repetition_penalty"]) == (0, 0.0, 1.0)
    assert (kwargs["presence_penalty"], kwargs["frequency_penalty"], kwargs["n"]) == (0.0, 0.0, 1)
    assert kwargs["include_stop_str_in_output"] is False and kwargs["ignore_eos"] is False
    assert vllm_sampling_kwargs(SamplingParams())["stop"] is None


def test_it_refuses_sampling_that_vllm_would_reject_as_a_permanent_error() -> None:
    with pytest.raises(BackendError) as hot:
        vllm_sampling_kwargs(SamplingParams(temperature=3.0))
    assert hot.value.permanent and "limit of 2" in hot.value.message
    with pytest.raises(BackendError) as bad:
        vllm_sampling_kwargs(SamplingParams(max_tokens=0))
    assert bad.value.permanent


def test_it_asks_for_untempered_top_logprobs_for_choices_within_the_cap() -> None:
    kwargs = choice_sampling_kwargs(max_logprobs=5)
    assert set(kwargs) <= VLLM_SAMPLING_FIELDS
    assert (kwargs["max_tokens"], kwargs["logprobs"], kwargs["temperature"], kwargs["top_p"]) == (1, 5, 1.0, 1.0)
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


def _output(text: str, n_tokens: int, reason: str | None, prompt: int = 7) -> types.SimpleNamespace:
    completion = types.SimpleNamespace(text=text, token_ids=list(range(n_tokens)), finish_reason=reason, logprobs=None)
    return types.SimpleNamespace(prompt_token_ids=list(range(prompt)), outputs=[completion])


def test_it_reads_finals_from_request_outputs() -> None:
    assert final_from_output(_output("Hi there", 3, "stop")) == Final("Hi there", 7, 3, "stop")
    assert final_from_output(_output("Hi", 5, "length")).finish_reason == "length"
    for broken in (_output("x", 1, "abort"), _output("x", 1, None), types.SimpleNamespace(outputs=[])):
        with pytest.raises(BackendError) as info:
            final_from_output(broken)
        assert not info.value.permanent


@dataclass
class Logprob:  # the shape of vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


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


# ----- batching, against a stand-in vllm module -----


@dataclass
class FakeSamplingParams:
    kwargs: dict[str, object]

    def __init__(self, **kwargs: object) -> None:
        unknown = set(kwargs) - VLLM_SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = kwargs


@dataclass
class FakeLLM:
    """Answers each conversation with the last user message reversed, one 'token' per character."""

    kwargs: dict[str, object]
    calls: list[tuple[list[list[dict[str, str]]], list[FakeSamplingParams]]] = field(default_factory=list)
    instances: list[FakeLLM] = field(default_factory=list)

    def chat(self, messages, sampling_params=None, use_tqdm=True):  # type: ignore[no-untyped-def]
        assert use_tqdm is False
        assert isinstance(sampling_params, list) and len(sampling_params) == len(messages)
        self.calls.append((messages, sampling_params))
        outputs = []
        for conv, params in zip(messages, sampling_params):
            user = conv[-1]["content"]
            if "TOO LONG" in user:
                raise ValueError("The decoder prompt (length 9000) is longer than the maximum model length of 8192.")
            if params.kwargs.get("logprobs"):
                top = {1: Logprob(math.log(0.3), 1, " A"), 2: Logprob(math.log(0.1), 2, " B"), 3: Logprob(math.log(0.6), 3, "Well")}
                completion = types.SimpleNamespace(text="Well", token_ids=[3], finish_reason="length", logprobs=[top])
                outputs.append(types.SimpleNamespace(prompt_token_ids=[0] * 9, outputs=[completion]))
                continue
            limit = int(params.kwargs["max_tokens"])  # type: ignore[arg-type]
            text = user[::-1][:limit]
            reason = "length" if len(user) > limit else "stop"
            outputs.append(_output(text, len(text) + (reason == "stop"), reason, prompt=len(user)))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeLLM]]:
    created: list[FakeLLM] = []

    def make_llm(**kwargs: object) -> FakeLLM:
        llm = FakeLLM(kwargs=dict(kwargs))
        created.append(llm)
        return llm

    module = types.ModuleType("vllm")
    module.LLM = make_llm  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    yield created


@pytest.mark.asyncio
async def test_it_runs_a_round_as_one_chat_call_with_per_request_sampling(fake_vllm: list[FakeLLM]) -> None:
    backend = VLLMBackend(_spec(max_model_len=2048))
    requests = [_request("abc", seed=1), _request("hello world", seed=2, max_tokens=4), _request("xy", temperature=0.5, stop=("!",))]
    finals = await backend.generate_batch(requests)
    assert [f.text for f in finals] == ["cba", "dlro", "yx"]
    assert [f.finish_reason for f in finals] == ["stop", "length", "stop"]
    assert finals[0].completion_tokens == 4 and finals[0].prompt_tokens == 3
    (llm,) = fake_vllm
    assert llm.kwargs["model"] == "org/some-model" and llm.kwargs["max_model_len"] == 2048
    (messages, params) = llm.calls[0]
    assert len(llm.calls) == 1 and len(messages) == 3
    assert messages[1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    assert [p.kwargs for p in params] == [vllm_sampling_kwargs(r.params) for r in requests]
    assert backend.batch_sizes == [3]
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_joins_concurrent_streams_into_one_call_and_yields_one_delta(fake_vllm: list[FakeLLM]) -> None:
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
async def test_it_scores_choices_from_the_engines_logprobs(fake_vllm: list[FakeLLM]) -> None:
    backend = VLLMBackend(_spec(max_logprobs=8))
    probs = await backend.choice_probs([{"role": "user", "content": "A or B?"}], ["A", "B"])
    assert probs == pytest.approx([0.75, 0.25])
    (_, params) = fake_vllm[0].calls[0]
    assert params[0].kwargs["logprobs"] == 8 and params[0].kwargs["max_tokens"] == 1
    with pytest.raises(BackendError) as info:
        await backend.choice_probs([{"role": "user", "content": "A or B?"}], ["C", "D"])
    assert info.value.permanent
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_fails_only_the_request_that_broke_a_batch(fake_vllm: list[FakeLLM]) -> None:
    backend = VLLMBackend(_spec(batch_wait_ms=100))
    await backend.wait_ready()
    results = await asyncio.gather(
        backend.complete(_request("fine")), backend.complete(_request("TOO LONG")), backend.complete(_request("ok")),
        return_exceptions=True,
    )
    assert isinstance(results[0], Final) and results[0].text == "enif"
    assert isinstance(results[2], Final) and results[2].text == "ko"
    error = results[1]
    assert isinstance(error, BackendError) and error.permanent and "maximum model length" in error.message
    # The batch of three failed; each request was then run alone.
    assert [len(c[0]) for c in fake_vllm[0].calls] == [3, 1, 1, 1]
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_reports_a_model_that_fails_to_load_as_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("vllm")

    def no_gpu(**kwargs: object) -> None:
        raise RuntimeError("No CUDA GPUs are available")

    module.LLM = no_gpu  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    backend = VLLMBackend(_spec())
    with pytest.raises(BackendError) as info:
        await backend.generate_batch([_request("a"), _request("b")])
    assert info.value.permanent and "No CUDA GPUs" in info.value.message and "org/some-model" in info.value.message
    await backend.aclose()


def _texts(finals: Sequence[Final]) -> list[str]:
    return [f.text for f in finals]


@pytest.mark.asyncio
async def test_it_serves_again_after_close_and_ignores_an_empty_batch(fake_vllm: list[FakeLLM]) -> None:
    backend = VLLMBackend(_spec())
    assert await backend.generate_batch([]) == []
    assert _texts(await backend.generate_batch([_request("ab")])) == ["ba"]
    await backend.aclose()
    await backend.aclose()  # twice is fine
    assert _texts(await backend.generate_batch([_request("cd")])) == ["dc"]
    assert len(fake_vllm) == 2  # a fresh engine after the close
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
