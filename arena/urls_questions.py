"""Question set pages (researchers only). Included by arena/urls.py under ``questions/``."""

from django.urls import path

from arena import views_questions as views

urlpatterns = [
    path("", views.question_sets, name="question_sets"),
    path("sets/<int:set_id>/", views.question_set, name="question_set"),
    path("<int:question_id>/", views.question_detail, name="question_detail"),
]
