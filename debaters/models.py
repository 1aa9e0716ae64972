"""Debater profiles: a model behind a backend, with its sampling parameters."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from debaters.backends.base import BackendSpec, SamplingParams


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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def backend_spec(self) -> BackendSpec:
        return BackendSpec(backend=self.backend, model=self.model, options=dict(self.options or {}))

    def sampling_params(self) -> SamplingParams:
        return SamplingParams.from_dict(self.sampling or {})

    @property
    def model_label(self) -> str:
        return f"{self.backend}/{self.model}"

    def clean(self) -> None:
        from debaters.backends import BackendError, backend_class

        try:
            backend_class(self.backend)
        except BackendError as exc:
            raise ValidationError({"backend": exc.message}) from exc
        try:
            self.sampling_params()
        except (TypeError, ValueError) as exc:
            raise ValidationError({"sampling": str(exc)}) from exc
