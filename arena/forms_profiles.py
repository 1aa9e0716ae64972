"""Forms of the profile pages: a profile's JSON fields spread over fields a researcher can fill in.

The form checks the shape of each field (numbers, URLs, an environment variable's name) and turns
them into the model's ``options`` and ``sampling``; the model's ``full_clean`` (through
:mod:`arena.profiles`) then decides what the backend accepts, and :meth:`ProfileForm.add_model_errors`
puts each of its errors on the field it names. An API key is never a field: the form asks for the
name of the environment variable that holds it, which the worker reads on every request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from django import forms
from django.core.exceptions import ValidationError

from debaters.backends import backend_names
from debaters.models import DebaterProfile
from debaters.speech import FREE, SPEECH_STYLES
from judging.ai_judges import PROMPT_VERSION
from judging.models import JudgeProfile

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Options that have a field of their own; "other options" may not set them.
OPTION_FIELDS = {"base_urls": "base_urls", "api_key_env": "api_key_env", "dtype": "dtype"}
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop")
SECRET_WORDS = ("api_key", "apikey", "secret", "password", "token")


class ProfileForm(forms.Form):
    """The backend part shared by debater and AI judge profiles."""

    name = forms.SlugField(max_length=100, help_text="Letters, digits, '-' and '_'. A new version gets a new name.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    backend = forms.ChoiceField(
        choices=(),
        help_text=(
            "transformers: in the worker's process; openai: vllm serve or any OpenAI-compatible server; "
            "vllm: offline engine."
        ),
    )
    model = forms.CharField(
        max_length=300, help_text="'embedded' is the bundled SmolLM2; else a folder, or the served model's name."
    )
    base_urls = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Base URLs",
        help_text="openai backend: one API root a line, with the version segment, e.g. http://gpu1:8000/v1.",
    )
    api_key_env = forms.CharField(
        max_length=100,
        required=False,
        label="API key variable",
        help_text=(
            "The name of the environment variable that holds the key on the workers (e.g. OPENAI_API_KEY). "
            "The key itself is never stored."
        ),
    )
    dtype = forms.ChoiceField(
        choices=[("", "backend default")] + [(d, d) for d in DTYPES],
        required=False,
        help_text="transformers and vllm: the weights' dtype (auto: float32 on a CPU, bfloat16 on a GPU).",
    )
    other_options = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Other backend options (JSON)",
        help_text=(
            'e.g. {"device": "cpu", "max_batch_size": 32} or {"timeout_s": 60, "extra_body": {...}}; '
            "see docs/serving.md."
        ),
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        backend = self.fields["backend"]
        assert isinstance(backend, forms.ChoiceField)
        backend.choices = [(name, name) for name in backend_names()]

    SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("Profile", ("name", "description")),
        ("Backend", ("backend", "model", "base_urls", "api_key_env", "dtype", "other_options")),
    )

    def fieldsets(self) -> list[tuple[str, list[forms.BoundField]]]:
        """The fields in titled groups, for the template."""
        return [(title, [self[name] for name in names]) for title, names in self.SECTIONS]

    def clean_base_urls(self) -> list[str]:
        urls = [line.strip() for line in self.cleaned_data["base_urls"].splitlines() if line.strip()]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValidationError(f"{url!r} must start with http:// or https://")
        return urls

    def clean_api_key_env(self) -> str:
        name = self.cleaned_data["api_key_env"].strip()
        if name and not ENV_NAME.match(name):
            raise ValidationError(
                "name the environment variable that holds the key (capital letters, digits and _, "
                "e.g. OPENAI_API_KEY), not the key itself"
            )
        return name

    def clean_other_options(self) -> dict[str, object]:
        text = self.cleaned_data["other_options"].strip()
        if not text:
            return {}
        try:
            options = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(options, dict):
            raise ValidationError("write a JSON object, {...}")
        for key in options:
            if key in OPTION_FIELDS:
                raise ValidationError(f"set {key} in its own field above")
            if any(word in key.lower() for word in SECRET_WORDS):
                raise ValidationError(
                    f"{key!r}: secrets are never stored in a profile; put the key in an environment variable "
                    "and name it in 'API key variable'"
                )
        return options

    def options(self) -> dict[str, object]:
        """The model's ``options`` from the cleaned fields."""
        data = self.cleaned_data
        options = dict(data["other_options"])
        if data["base_urls"]:
            options["base_urls"] = data["base_urls"]
        if data["api_key_env"]:
            options["api_key_env"] = data["api_key_env"]
        if data["dtype"]:
            options["dtype"] = data["dtype"]
        return options

    def values(self) -> dict[str, object]:
        """The editable model fields (everything but the name)."""
        data = self.cleaned_data
        return {
            "description": data["description"],
            "backend": data["backend"],
            "model": data["model"],
            "options": self.options(),
        }

    def add_model_errors(self, error: ValidationError) -> None:
        """Put the model's errors on the fields they name; the rest become errors of the whole form."""
        if not hasattr(error, "error_dict"):
            for message in error.messages:
                self.add_error(None, message)
            return
        for key, errors in error.message_dict.items():
            for message in errors:
                self.add_error(self._field_for(key, message), message)

    def _field_for(self, key: str, message: str) -> str | None:
        if key in self.fields:
            return key
        if key == "options":
            named = [field for option, field in OPTION_FIELDS.items() if option in message]
            return named[0] if named else "other_options"
        if key == "sampling":
            named = [field for field in SAMPLING_FIELDS if field in message and field in self.fields]
            return named[0] if named else None
        return None

    @staticmethod
    def backend_initial(profile: DebaterProfile | JudgeProfile) -> dict[str, object]:
        options = dict(profile.options or {})
        urls = options.pop("base_urls", [])
        if isinstance(urls, str):
            urls = [urls]
        return {
            "name": profile.name,
            "description": profile.description,
            "backend": profile.backend,
            "model": profile.model,
            "base_urls": "\n".join(str(u) for u in urls) if isinstance(urls, list) else "",
            "api_key_env": options.pop("api_key_env", ""),
            "dtype": options.pop("dtype", ""),
            "other_options": json.dumps(options, indent=1, sort_keys=True) if options else "",
        }


class DebaterProfileForm(ProfileForm):
    max_tokens = forms.IntegerField(
        min_value=1, max_value=32768, required=False, help_text="Empty: 256. A debate's own limit caps it."
    )
    temperature = forms.FloatField(min_value=0.0, max_value=5.0, required=False, help_text="Empty: 0.7. 0 is greedy.")
    top_p = forms.FloatField(min_value=0.0, max_value=1.0, required=False, help_text="Empty: 0.95.")
    seed = forms.IntegerField(min_value=0, required=False, help_text="Empty: the debate's seed.")
    stop = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), required=False, help_text="Stop strings, one a line."
    )
    context_tokens = forms.IntegerField(
        min_value=1, required=False, label="Context budget (tokens)",
        help_text="Token budget for story excerpts; empty gives the whole story (long-context models).",
    )

    speech_style = forms.ChoiceField(
        choices=[(name, f"{name}: {text}") for name, text in SPEECH_STYLES.items()], initial=FREE, required=False,
        help_text="How a speech is asked for (docs/protocols.md, \u201cSpeech structure\u201d). Empty: free.",
    )

    SECTIONS = ProfileForm.SECTIONS + (
        ("Sampling and context", ("max_tokens", "temperature", "top_p", "seed", "stop", "context_tokens", "speech_style")),
    )

    def clean_speech_style(self) -> str:
        return self.cleaned_data["speech_style"] or FREE

    def clean_stop(self) -> list[str]:
        return [line for line in self.cleaned_data["stop"].splitlines() if line.strip()]

    def sampling(self) -> dict[str, object]:
        data = self.cleaned_data
        return {key: data[key] for key in SAMPLING_FIELDS if data.get(key) not in (None, [])}

    def values(self) -> dict[str, object]:
        return {
            **super().values(), "sampling": self.sampling(), "context_tokens": self.cleaned_data["context_tokens"],
            "speech_style": self.cleaned_data["speech_style"],
        }

    def build(self) -> DebaterProfile:
        return DebaterProfile(name=self.cleaned_data["name"], **self.values())

    @classmethod
    def initial_for(cls, profile: DebaterProfile) -> dict[str, object]:
        sampling: Mapping[str, object] = profile.sampling or {}
        initial = cls.backend_initial(profile)
        initial.update({key: sampling[key] for key in SAMPLING_FIELDS if key in sampling and key != "stop"})
        stops = sampling.get("stop", [])
        initial["stop"] = "\n".join(str(s) for s in stops) if isinstance(stops, list) else ""
        initial["context_tokens"] = profile.context_tokens
        initial["speech_style"] = profile.speech_style
        return initial


class JudgeProfileForm(ProfileForm):
    prompt_version = forms.CharField(max_length=40, initial=PROMPT_VERSION, help_text="Recorded with every verdict.")
    chain_of_thought = forms.BooleanField(required=False, help_text="Reason in text before the answer letter.")
    clamp = forms.BooleanField(required=False, help_text="Clamp probabilities to 40–60% (Bai et al. 2022).")
    max_cot_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=128, label="Chain-of-thought tokens")

    SECTIONS = ProfileForm.SECTIONS + (
        ("Judging", ("prompt_version", "chain_of_thought", "clamp", "max_cot_tokens")),
    )

    def values(self) -> dict[str, object]:
        data = self.cleaned_data
        return {
            **super().values(),
            "prompt_version": data["prompt_version"],
            "chain_of_thought": data["chain_of_thought"],
            "clamp": data["clamp"],
            "max_cot_tokens": data["max_cot_tokens"],
        }

    def build(self) -> JudgeProfile:
        return JudgeProfile(name=self.cleaned_data["name"], **self.values())

    @classmethod
    def initial_for(cls, profile: JudgeProfile) -> dict[str, object]:
        initial = cls.backend_initial(profile)
        initial.update(
            prompt_version=profile.prompt_version,
            chain_of_thought=profile.chain_of_thought,
            clamp=profile.clamp,
            max_cot_tokens=profile.max_cot_tokens,
        )
        return initial
