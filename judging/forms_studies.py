"""Forms of the study, invitation, sign-up and judge-management pages."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from arena.engine.protocol import protocol_choices
from arena.models import Debate, QuestionSet, Tournament
from arena.roles import JUDGE
from judging.models import JudgeProfile, StoryExposure, Study


def parse_debate_ids(raw: str) -> list[Debate]:
    """Comma- or space-separated debate ids, as debates; a ValidationError names what is wrong."""
    ids: list[int] = []
    for part in raw.replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit():
            raise forms.ValidationError(f"{part!r} is not a debate id")
        ids.append(int(part))
    found = {d.pk: d for d in Debate.objects.filter(pk__in=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise forms.ValidationError(f"no debate with id {', '.join(map(str, missing))}")
    return [found[i] for i in ids]


class AddDebatesForm(forms.Form):
    debate_ids = forms.CharField(label="Debate ids", help_text="Comma-separated.")
    gold = forms.BooleanField(required=False, label="Gold checks (easy questions mixed into judges' streams)")

    def clean_debate_ids(self) -> list[Debate]:
        return parse_debate_ids(self.cleaned_data.get("debate_ids", ""))


class StudyForm(forms.ModelForm):
    debate_ids = forms.CharField(
        required=False, label="Debates by id (optional)",
        help_text="Comma-separated debate ids, added to what the filters select.",
    )

    class Meta:
        model = Study
        fields = [
            "name", "description", "mode", "verdicts_per_debate", "sample_fraction", "tournament", "protocol",
            "question_set",
            "distinct_story", "per_judge_cap", "gold_every", "lease_seconds", "question_deadline_s",
            "ai_questioner", "leaderboard", "open_to_all",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["protocol"] = forms.ChoiceField(
            choices=[("", "any protocol"), *protocol_choices()], required=False,
            help_text="Only debates of this protocol.",
        )
        self.fields["sample_fraction"].required = False
        self.fields["tournament"].queryset = Tournament.objects.order_by("-created_at")  # type: ignore[attr-defined]
        self.fields["question_set"].queryset = QuestionSet.objects.order_by("name")  # type: ignore[attr-defined]
        self.fields["ai_questioner"].queryset = JudgeProfile.objects.order_by("name")  # type: ignore[attr-defined]

    def clean_verdicts_per_debate(self) -> int:
        value = self.cleaned_data["verdicts_per_debate"]
        if not 1 <= value <= 50:
            raise forms.ValidationError("between 1 and 50 verdicts per debate")
        return int(value)

    def clean_debate_ids(self) -> list[Debate]:
        return parse_debate_ids(self.cleaned_data.get("debate_ids", ""))

    def clean_sample_fraction(self) -> float:
        raw = self.cleaned_data.get("sample_fraction")
        value = 1.0 if raw is None else float(raw)
        if not 0.0 < value <= 1.0:
            raise forms.ValidationError("a share above 0 and at most 1")
        return value

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        filters = data.get("tournament") or data.get("protocol") or data.get("question_set")
        if not filters and not data.get("debate_ids") and not self.errors:
            raise forms.ValidationError("choose which debates: a tournament, a protocol, a question set, or debate ids")
        return data


class HandAssignForm(forms.Form):
    debate = forms.IntegerField(min_value=1, label="Debate id")
    judge = forms.ModelChoiceField(queryset=get_user_model().objects.none())

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["judge"].queryset = (  # type: ignore[attr-defined]
            get_user_model().objects.filter(groups__name=JUDGE, is_active=True).order_by("username")
        )


class InvitationForm(forms.Form):
    note = forms.CharField(max_length=200, required=False, help_text="Who it is for (only researchers see it).")
    study = forms.ModelChoiceField(queryset=Study.objects.filter(active=True), required=False)
    days = forms.IntegerField(min_value=1, max_value=365, required=False, label="Valid for (days)")


class SignupForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, max_length=200)
    password_again = forms.CharField(widget=forms.PasswordInput, max_length=200, label="Password again")

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("password") and data.get("password") != data.get("password_again"):
            raise forms.ValidationError("the two passwords differ")
        return data


class StoryExposureForm(forms.Form):
    """A story a judge read outside judging; ``judging.studies.record_exposure`` checks the title."""

    story = forms.CharField(
        max_length=500,
        label="Story title",
        help_text="As the question sets spell it (Question.source_title); any case.",
        widget=forms.TextInput(attrs={"list": "story-titles", "autocomplete": "off"}),
    )
    role = forms.ChoiceField(
        choices=StoryExposure.Role.choices,
        label="Read it as",
        help_text="debater: argued a debate on it outside the arena; expert: read the text as an expert judge.",
    )
