from collections.abc import Sequence

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from arena import profiles
from arena.models import Debate
from judging import studies
from judging.models import (
    Assignment,
    Export,
    Invitation,
    JudgeProfile,
    JudgeStatus,
    ProfileCheck,
    StoryExposure,
    Study,
    StudyDebate,
    StudySlot,
    Verdict,
)


class AssignmentAdminForm(forms.ModelForm):
    """A new assignment made in the admin follows the exposure rules too (docs/judging.md)."""

    class Meta:
        model = Assignment
        fields = "__all__"

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        debate, judge = data.get("debate"), data.get("judge")
        if self.instance.pk is None and isinstance(debate, Debate) and judge is not None:
            broken = studies.check_assignment(debate, judge)  # type: ignore[arg-type]
            if broken:
                raise forms.ValidationError(f"refused: {studies.ExposureError(broken)}")
        return data


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    form = AssignmentAdminForm
    list_display = ("debate", "judge", "shown_first", "opened_at", "created_at")
    raw_id_fields = ("debate",)


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ("debate", "kind", "judge", "judge_label", "p_a", "p_b", "correct", "created_at")
    list_filter = ("kind", "correct")
    raw_id_fields = ("debate",)


@admin.register(JudgeProfile)
class JudgeProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "lineage", "version", "backend", "model", "prompt_version", "chain_of_thought", "clamp")

    def get_readonly_fields(self, request: HttpRequest, obj: JudgeProfile | None = None) -> Sequence[str]:
        # A judge profile that judged is a record of who judged: freeze it (edits make a new version).
        if obj is not None and profiles.is_used(obj):
            return [f.name for f in JudgeProfile._meta.fields if f.name not in ("id", "description", "created_at")]
        return ("lineage", "version")


@admin.register(ProfileCheck)
class ProfileCheckAdmin(admin.ModelAdmin):
    list_display = ("id", "debater", "judge", "status", "first_token_s", "tokens_per_s", "created_by", "created_at")
    list_filter = ("status",)
    readonly_fields = [f.name for f in ProfileCheck._meta.fields]


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "format", "status", "rows", "created_by", "created_at")
    list_filter = ("status", "kind", "format")


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("name", "mode", "verdicts_per_debate", "distinct_story", "per_judge_cap", "open_to_all", "active",
                    "created_at")
    list_filter = ("mode", "active", "open_to_all")
    filter_horizontal = ("members",)


@admin.register(StudyDebate)
class StudyDebateAdmin(admin.ModelAdmin):
    list_display = ("study", "debate", "target", "gold")
    list_filter = ("study", "gold")
    raw_id_fields = ("debate",)


@admin.register(StudySlot)
class StudySlotAdmin(admin.ModelAdmin):
    list_display = ("entry", "index", "judge", "lease_expires", "verdict", "handed_out")
    raw_id_fields = ("entry", "verdict")


@admin.register(StoryExposure)
class StoryExposureAdmin(admin.ModelAdmin):
    list_display = ("judge", "story", "role", "created_at")
    search_fields = ("story",)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("note", "study", "created_by", "expires_at", "used_by", "used_at")
    readonly_fields = ("token",)


@admin.register(JudgeStatus)
class JudgeStatusAdmin(admin.ModelAdmin):
    list_display = ("judge", "deactivated_at", "excluded", "updated_at")
