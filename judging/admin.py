from django.contrib import admin

from judging.models import Assignment, Verdict


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("debate", "judge", "shown_first", "opened_at", "created_at")
    raw_id_fields = ("debate",)


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ("debate", "kind", "judge", "judge_label", "p_a", "p_b", "correct", "created_at")
    list_filter = ("kind", "correct")
    raw_id_fields = ("debate",)
