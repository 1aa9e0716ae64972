from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from arena.constitution import DEFAULT_NAME
from arena.engine.protocol import (
    MAX_BEST_OF_N,
    MAX_CRITIQUE_ROUNDS,
    NYU_TURN_PENALTY,
    SCORING_RULES,
    ConsultancyProtocol,
    JudgingRules,
    Limits,
    ProtocolError,
    ProtocolSettings,
    draw_consultant_side,
    make_protocol,
    protocol_choices,
)
from arena.models import Constitution, Question
from arena.roles import JUDGE
from debaters.models import DebaterProfile
from debaters.referee import RuleError, parse_rules
from judging.models import JudgeProfile
from judging.studies import ExposureError, check_new_debate


class QuestionField(forms.ModelChoiceField):
    """A question given by its id or external id in a text box (the picker's search fills it in),
    so the form does not render thousands of options."""

    widget = forms.TextInput

    def to_python(self, value: object) -> Question | None:
        text = str(value or "").strip()
        if not text:
            return None
        rows = self.queryset
        found = rows.filter(pk=int(text)).first() if text.isdigit() else None
        found = found or rows.filter(external_id=text).first()
        if found is None:
            raise forms.ValidationError(f"No question has the id or external id \u201c{text[:100]}\u201d.", code="invalid_choice")
        return found


class NewDebateForm(forms.Form):
    # The main fields, then the judges; the rest is in "More settings" (MAIN_FIELDS, the template).
    question = QuestionField(
        queryset=Question.objects.select_related("question_set").order_by("id"),
        help_text="Search by words of the question, its story's title or its id, and pick one; or type its id "
        "or external id.",
    )
    protocol = forms.ChoiceField(
        choices=protocol_choices, initial="debate",
        help_text="Who speaks and what the judge sees: debate, consultancy, open variants, naive or expert judge "
        "(docs/protocols.md).",
    )
    debater_a = forms.ModelChoiceField(
        queryset=DebaterProfile.objects.all(),
        label="Debater for answer 1",
        help_text="The model and speech style arguing answer 1. Open protocols: the debater who chooses its answer.",
    )
    debater_b = forms.ModelChoiceField(
        queryset=DebaterProfile.objects.all(), label="Debater for answer 2",
        help_text="The model and speech style arguing answer 2; pick another profile to see two styles argue.",
    )
    constitution = forms.ModelChoiceField(
        queryset=Constitution.objects.order_by("name", "-version"), empty_label=None,
        help_text="The principles the debaters follow and the rules the referee checks.",
    )
    rounds = forms.IntegerField(min_value=1, max_value=10, initial=2, help_text="Speeches per debater.")
    max_tokens = forms.IntegerField(
        min_value=8, max_value=8192, initial=120, label="Max tokens per speech",
        help_text="A speech that reaches it ends at its last whole sentence and is marked cut for the judge.",
    )
    word_limit = forms.IntegerField(
        min_value=5, max_value=5000, initial=120, label="Word limit per speech",
        help_text="The referee truncates a longer speech (the constitution's limit applies if stricter).",
    )
    scoring = forms.ChoiceField(
        choices=[(r, r) for r in SCORING_RULES], initial="log", label="Judge's scoring rule",
        help_text="How a judge's probability for the right answer is scored.",
    )
    turn_penalty = forms.FloatField(
        min_value=0.0, max_value=1.0, initial=NYU_TURN_PENALTY, label="Score penalty per extra round",
        help_text="0.05 as in the NYU study.",
    )
    allow_even = forms.BooleanField(
        required=False, label="Allow a 50/50 verdict", help_text="Off: a judge must lean one way."
    )
    min_turns = forms.IntegerField(
        min_value=0, max_value=40, required=False, label="Speeches before a verdict",
        help_text="Empty: the whole debate.",
    )
    critique_rounds_a = forms.IntegerField(
        min_value=0, max_value=MAX_CRITIQUE_ROUNDS, initial=0, label="Critique-and-revision rounds, debater 1",
        help_text="SL-CAI: the debater critiques and rewrites each speech this many times (free style).",
    )
    critique_rounds_b = forms.IntegerField(
        min_value=0, max_value=MAX_CRITIQUE_ROUNDS, initial=0, label="Critique-and-revision rounds, debater 2",
        help_text="As for debater 1.",
    )
    best_of_n_a = forms.IntegerField(
        min_value=1, max_value=MAX_BEST_OF_N, initial=1, label="Best-of-N, debater 1",
        help_text="Sample N speeches and keep the one the AI judge scores best (free style).",
    )
    best_of_n_b = forms.IntegerField(
        min_value=1, max_value=MAX_BEST_OF_N, initial=1, label="Best-of-N, debater 2", help_text="As for debater 1."
    )
    judge_profile = forms.ModelChoiceField(
        queryset=JudgeProfile.objects.all(), required=False, label="AI judge profile",
        help_text="Scores best-of-N candidates, checks concessions, asks questions when no human judges. "
        "Empty: each debater's own model.",
    )
    judges = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(), required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Human judges who get this debate in their queue. None: a debate for AI judges and researchers.",
    )

    MAIN_FIELDS = ("question", "protocol", "debater_a", "debater_b", "judges")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        judges = get_user_model().objects.filter(groups__name=JUDGE, is_active=True).order_by("username")
        # Nobody is pre-selected: assigning judges is a choice.
        self.fields["judges"].queryset = judges  # type: ignore[attr-defined]
        latest = Constitution.objects.filter(name=DEFAULT_NAME).order_by("-version").first()
        if latest is not None and "constitution" not in self.initial:
            self.fields["constitution"].initial = latest.pk
            # The constitution's rules set the starting values; a debate may be stricter.
            try:
                rules = parse_rules(latest.rules)
            except RuleError:
                rules = None
            if rules is not None:
                self.fields["rounds"].initial = rules.rounds
                self.fields["word_limit"].initial = min(120, rules.word_limit)

    def main_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.MAIN_FIELDS]

    def more_fields(self) -> list[forms.BoundField]:
        return [field for field in self if field.name not in self.MAIN_FIELDS]

    def chosen_question(self) -> Question | None:
        """The question already chosen (a re-shown form), for the picker's summary."""
        value = self["question"].value()
        try:
            # ModelChoiceField.to_python returns a Question or None; django-stubs types it as Any.
            return self.fields["question"].to_python(value)  # type: ignore[no-any-return]
        except forms.ValidationError:
            return None

    def limits(self, context_tokens: int | None) -> Limits:
        data = self.cleaned_data
        return Limits(
            rounds=data["rounds"], max_tokens=data["max_tokens"], word_limit=data["word_limit"], context_tokens=context_tokens
        )

    def protocol_settings(self, context_tokens: int | None, seed: int) -> ProtocolSettings:
        """Everything the debate stores in its settings; a consultancy's side is drawn from ``seed``."""
        data = self.cleaned_data
        consultant_side = draw_consultant_side(seed) if data["protocol"] == ConsultancyProtocol.name else None
        judge = data.get("judge_profile")
        return ProtocolSettings(
            rounds=data["rounds"],
            max_tokens=data["max_tokens"],
            word_limit=data["word_limit"],
            context_tokens=context_tokens,
            rules=self._rules(),
            consultant_side=consultant_side,
            critique_rounds=(data["critique_rounds_a"], data["critique_rounds_b"]),
            best_of_n=(data["best_of_n_a"], data["best_of_n_b"]),
            judge_profile=judge.name if judge else "",
        )

    def _rules(self) -> JudgingRules:
        data = self.cleaned_data
        return JudgingRules(
            min_turns=data.get("min_turns"),
            allow_even=bool(data.get("allow_even")),
            scoring=data["scoring"],
            turn_penalty=float(data["turn_penalty"]),
        )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        question, judges = data.get("question"), data.get("judges")
        if isinstance(question, Question) and judges:
            # Hand assignment follows the exposure rules too (docs/judging.md), refused with the rule named.
            # ``judges`` is the cleaned ModelMultipleChoiceField value: a QuerySet of users.
            for name, broken in check_new_debate(question, judges).items():  # type: ignore[arg-type]
                self.add_error("judges", f"{name} may not judge this question ({ExposureError(broken)}); deselect them")
        needed = ("rounds", "max_tokens", "word_limit", "protocol", "scoring", "turn_penalty")
        if not all(k in data for k in needed):
            return data
        try:
            Limits(rounds=data["rounds"], max_tokens=data["max_tokens"], word_limit=data["word_limit"]).validate()
            rules = self._rules()
            rules.validate()
            protocol = make_protocol(
                str(data["protocol"]),
                {"rounds": data["rounds"], "max_tokens": data["max_tokens"], "word_limit": data["word_limit"], **rules.to_settings()},
            )
        except ProtocolError as exc:
            raise forms.ValidationError(str(exc)) from exc
        min_turns = data.get("min_turns")
        if isinstance(min_turns, int) and min_turns > protocol.total_turns():
            self.add_error("min_turns", f"this protocol has only {protocol.total_turns()} speeches")
        constitution = data.get("constitution")
        if isinstance(constitution, Constitution):
            try:
                rules_limit = parse_rules(constitution.rules).word_limit
            except RuleError as exc:
                raise forms.ValidationError(f"{constitution} has broken rules: {exc}") from exc
            if data["word_limit"] > rules_limit:
                self.add_error("word_limit", f"{constitution} allows at most {rules_limit} words per speech")
        return data


class ConstitutionForm(forms.Form):
    """An edited constitution: saved as a new version by ``arena.constitution.new_version``."""

    name = forms.CharField(max_length=100, help_text="Keep the name for a new version; a new name starts at version 1.")
    preamble = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=5000)
    principles = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14}), max_length=60_000, help_text="One per line, written as id: text."
    )
    rules = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}), max_length=10_000,
        help_text="A JSON object; see docs/constitution.md for every rule.",
    )

    def clean_principles(self) -> list[dict[str, str]]:
        from arena.constitution import ConstitutionError, parse_principles_text

        try:
            return parse_principles_text(self.cleaned_data["principles"])
        except ConstitutionError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_rules(self) -> dict[str, object]:
        import json

        from arena.constitution import ConstitutionError, validate_rules

        try:
            rules = json.loads(self.cleaned_data["rules"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
        try:
            return validate_rules(rules)
        except ConstitutionError as exc:
            raise forms.ValidationError(str(exc)) from exc
