"""Verdict.position_bias gets the analysis page's definition: half the old stored difference.

Old: P(answer 1 | shown first) − P(answer 1 | shown second). New: the mean over both orders of
P(answer shown first) − 0.5, which is half of that. Reversible.
"""

from django.db import migrations, models
from django.db.models import F


def halve(apps, schema_editor):  # type: ignore[no-untyped-def]
    Verdict = apps.get_model("judging", "Verdict")
    Verdict.objects.filter(position_bias__isnull=False).update(position_bias=F("position_bias") / 2)


def double(apps, schema_editor):  # type: ignore[no-untyped-def]
    Verdict = apps.get_model("judging", "Verdict")
    Verdict.objects.filter(position_bias__isnull=False).update(position_bias=F("position_bias") * 2)


class Migration(migrations.Migration):
    dependencies = [("judging", "0004_verdict_correct_null_for_even")]

    operations = [
        migrations.AlterField(
            model_name="verdict",
            name="position_bias",
            field=models.FloatField(
                blank=True,
                help_text="AI judges: mean P(answer shown first) over both orders − 0.5, i.e. (P(answer 1 | shown first) − P(answer 1 | shown second)) / 2.",
                null=True,
            ),
        ),
        migrations.RunPython(halve, double),
    ]
