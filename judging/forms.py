from __future__ import annotations

from django import forms


class VerdictForm(forms.Form):
    p_first = forms.FloatField(min_value=0.0, max_value=1.0, label="Probability of the first answer")
    p_second = forms.FloatField(min_value=0.0, max_value=1.0, label="Probability of the second answer")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=5000)
