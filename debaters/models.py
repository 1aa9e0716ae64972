"""Debater profiles: a model behind a backend, with its sampling parameters."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from debaters.backends import backend_names
from debaters.backends.base import BackendError, BackendSpec, LimitError, SamplingParams
from debaters.backends.limits import check_profile, limits_for
from debaters.speech import FREE, SPEECH_STYLES


def validate_backend_fields(backend: str, model: str, options: object) -> None:
    """Check the backend part of a debater or AI judge profile; raise ``ValidationError`` keyed by field.

    Runs in the web process, so it never imports a backend (that would import torch): a backend is
    checked by its registered name; whether it is installed shows when a worker runs it (the
    profile's "Test" button).
    """
    if backend not in backend_names():
        raise ValidationError({"backend": f"unknown backend {backend!r}; known: {', '.join(backend_names())}"})
    if not isinstance(options, dict):
        raise ValidationError({"options": "the backend options must be a JSON object"})


def validate_backend_limits(
    spec: BackendSpec, params: SamplingParams | None, *, fields: dict[str, str] | None = None
) -> None:
    """Refuse options or sampling the profile's backend cannot serve (:mod:`debaters.backends.limits`).

    The ``ValidationError`` is keyed ``options`` for a bad option, else by the form field that holds the
    parameter: ``fields`` maps a sampling parameter to it (default ``sampling``). ``params=None`` checks
    the options only.
    """
    try:
        if params is None:
            limits_for(spec)
        else:
            check_profile(spec, params)
    except LimitError as exc:
        raise ValidationError({(fields or {}).get(exc.parameter, "sampling"): exc.message}) from exc
    except BackendError as exc:
        raise ValidationError({"options": exc.message}) from exc


class DebaterProfile(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    backend = models.CharField(max_length=40, default="transformers")
    model = models.CharField(max_length=300, default="embedded", help_text="'embedded' is the bundled SmolLM2.")
    options = models.JSONField(default=dict, blank=True, help_text="Backend options: device, base_urls, ...")
    sampling = models.JSONField(default=dict, blank=True, help_text="max_tokens, temperature, top_p, stop.")
    context_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Token budget for story excerpts; empty gives the whole story (long-context models).",
    )
    speech_style = models.CharField(
        max_length=20,
        choices=[(name, name) for name in SPEECH_STYLES],
        # What every profile did before styles existed; the shipped embedded profiles choose theirs.
        default=FREE,
        help_text=(
            "How a speech is asked for (debaters.speech, docs/protocols.md): free (one request, the v2 prompt), "
            "structured (the answer stated, a quote the model writes, then its argument), or evidence "
            "(structured, with an evidence tool listing story sentences to quote from)."
        ),
    )
    lineage = models.SlugField(
        max_length=100, blank=True, help_text="The name of the profile's first version; versions share it."
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["lineage", "version"], name="unique_debater_profile_version")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        # A profile created anywhere (get_or_create, the admin) starts its own lineage.
        if not self.lineage:
            self.lineage = self.name
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def backend_spec(self) -> BackendSpec:
        return BackendSpec(backend=self.backend, model=self.model, options=dict(self.options or {}))

    def sampling_params(self) -> SamplingParams:
        return SamplingParams.from_dict(self.sampling or {})

    @property
    def model_label(self) -> str:
        return f"{self.backend}/{self.model}"

    def clean(self) -> None:
        validate_backend_fields(self.backend, self.model, self.options)
        try:
            params = self.sampling_params()
        except (TypeError, ValueError) as exc:
            raise ValidationError({"sampling": str(exc)}) from exc
        validate_backend_limits(self.backend_spec(), params)
