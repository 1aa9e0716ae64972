from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from arena.engine.protocol import Limits, ProtocolError
from arena.models import Question
from arena.roles import JUDGE
from debaters.models import DebaterProfile


class NewDebateForm(forms.Form):
    question = forms.ModelChoiceField(queryset=Question.objects.select_related("question_set").order_by("id"))
    debater_a = forms.ModelChoiceField(queryset=DebaterProfile.objects.all(), label="Debater for answer 1")
    debater_b = forms.ModelChoiceField(queryset=DebaterProfile.objects.all(), label="Debater for answer 2")
    rounds = forms.IntegerField(min_value=1, max_value=10, initial=2)
    max_tokens = forms.IntegerField(min_value=8, max_value=8192, initial=120, label="Max tokens per speech")
    word_limit = forms.IntegerField(min_value=5, max_value=5000, initial=120, label="Word limit per speech")
    judges = forms.ModelMultipleChoiceField(queryset=get_user_model().objects.none(), required=False)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        judges = get_user_model().objects.filter(groups__name=JUDGE, is_active=True).order_by("username")
        self.fields["judges"].queryset = judges  # type: ignore[attr-defined]
        self.fields["judges"].initial = list(judges)
        self.fields["question"].label_from_instance = lambda q: f"{q.external_id} — {q.question[:80]}"  # type: ignore[attr-defined]

    def limits(self, context_tokens: int | None) -> Limits:
        data = self.cleaned_data
        return Limits(
            rounds=data["rounds"], max_tokens=data["max_tokens"], word_limit=data["word_limit"], context_tokens=context_tokens
        )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if all(k in data for k in ("rounds", "max_tokens", "word_limit")):
            try:
                Limits(rounds=data["rounds"], max_tokens=data["max_tokens"], word_limit=data["word_limit"]).validate()
            except ProtocolError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return data
