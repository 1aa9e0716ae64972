"""debaters.backends.limits: a profile its backend or server cannot serve is refused when it is saved
(``clean``, which the admin, the profile forms and ``full_clean`` run), naming the parameter and the
limit; the backends refuse the same requests with the same limits.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from debaters.backends.base import BackendError, BackendSpec, LimitError, SamplingParams
from debaters.backends.limits import check_profile, limits_for
from debaters.models import DebaterProfile
from judging.models import JudgeProfile

VLLM_SERVE = {"base_urls": ["http://vllm-a:8000/v1"], "max_model_len": 8192}


def _refusal(profile: DebaterProfile | JudgeProfile) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        profile.clean()
    return info.value.message_dict


def test_it_refuses_debater_sampling_the_server_cannot_serve_naming_parameter_and_limit() -> None:
    too_long = _refusal(DebaterProfile(name="d", backend="openai", model="debater-a", options=VLLM_SERVE, sampling={"max_tokens": 9000}))
    assert "max_tokens 9000 is above 8192" in too_long["sampling"][0] and "--max-model-len" in too_long["sampling"][0]
    hot = _refusal(DebaterProfile(name="d", backend="openai", model="debater-a", options=VLLM_SERVE, sampling={"temperature": 2.5}))
    assert "temperature 2.5 is above 2" in hot["sampling"][0]
    empty_stop = _refusal(DebaterProfile(name="d", backend="vllm", model="org/m", sampling={"stop": ["", "\n\n"]}))
    assert "empty string" in empty_stop["sampling"][0] and "vLLM 0.33" in empty_stop["sampling"][0]
    # Within the limits, and the in-process backend's own wider range, are accepted.
    DebaterProfile(name="d", backend="openai", model="debater-a", options=VLLM_SERVE, sampling={"max_tokens": 8192, "temperature": 2}).clean()
    DebaterProfile(name="d", backend="transformers", model="embedded", sampling={"temperature": 3.0}).clean()


def test_it_refuses_backend_options_the_backend_would_refuse() -> None:
    bad_vllm = _refusal(DebaterProfile(name="d", backend="vllm", model="org/m", options={"engine_args": {"trust_remote_code": True}}))
    assert "trust_remote_code" in bad_vllm["options"][0]
    bad_openai = _refusal(DebaterProfile(name="d", backend="openai", model="m", options={"base_urls": ["ftp://x"]}))
    assert "http://" in bad_openai["options"][0]


def test_it_refuses_an_ai_judges_chain_of_thought_longer_than_the_servers_context() -> None:
    options = {**VLLM_SERVE, "max_model_len": 512}
    refused = _refusal(JudgeProfile(name="j", backend="openai", model="judge", options=options, chain_of_thought=True, max_cot_tokens=600))
    assert "max_tokens 600 is above 512" in refused["max_cot_tokens"][0]
    JudgeProfile(name="j", backend="openai", model="judge", options=options, chain_of_thought=False, max_cot_tokens=600).clean()
    bad = _refusal(JudgeProfile(name="j", backend="openai", model="judge", options={"base_urls": []}))
    assert "base_urls" in bad["options"][0]


def test_it_gives_each_backend_its_limits_in_one_place() -> None:
    assert limits_for(BackendSpec("transformers", "embedded")).max_temperature == 5.0
    vllm = limits_for(BackendSpec("vllm", "org/m", {"max_logprobs": 8}))
    assert (vllm.max_temperature, vllm.empty_stop, vllm.max_logprobs) == (2.0, False, 8)
    served = limits_for(BackendSpec("openai", "m", {**VLLM_SERVE, "max_logprobs": 50}))
    assert (served.max_temperature, served.max_tokens, served.max_logprobs) == (2.0, 8192, 20)
    with pytest.raises(LimitError) as info:
        check_profile(BackendSpec("openai", "m", VLLM_SERVE), SamplingParams(max_tokens=8193))
    assert (info.value.parameter, info.value.limit) == ("max_tokens", 8192)
    with pytest.raises(LimitError) as generic:
        check_profile(BackendSpec("transformers", "embedded"), SamplingParams(top_p=0.0))
    assert generic.value.parameter == "top_p"
    with pytest.raises(BackendError) as options:
        limits_for(BackendSpec("openai", "m", {"base_urls": ["http://x/v1"], "max_model_len": "big"}))
    assert options.value.permanent
