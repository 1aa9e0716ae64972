from django.contrib import admin

from debaters.models import DebaterProfile


@admin.register(DebaterProfile)
class DebaterProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "model", "context_tokens", "created_at")
    search_fields = ("name", "model")
