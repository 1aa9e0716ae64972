"""Constitution pages (researchers only). Included by arena/urls.py under ``constitutions/``."""

from django.urls import path

from arena import views_constitution as views

urlpatterns = [
    path("", views.constitution_list, name="constitution_list"),
    path("diff/", views.constitution_diff, name="constitution_diff"),
    path("<int:constitution_id>/", views.constitution_detail, name="constitution_detail"),
    path("<int:constitution_id>/edit/", views.constitution_edit, name="constitution_edit"),
]
