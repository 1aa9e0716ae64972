from django.contrib import admin

from judging.models import Assignment, Export, JudgeProfile, Verdict


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("debate", "judge", "shown_first", "opened_at", "created_at")
    raw_id_fields = ("debate",)


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ("debate", "kind", "judge", "judge_label", "p_a", "p_b", "correct", "created_at")
    list_filter = ("kind", "correct")
    raw_id_fields = ("debate",)


@admin.register(JudgeProfile)
class JudgeProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "model", "prompt_version", "chain_of_thought", "clamp")


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "format", "status", "rows", "created_by", "created_at")
    list_filter = ("status", "kind", "format")
