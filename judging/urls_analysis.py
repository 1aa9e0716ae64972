"""Analysis pages; included by arena/urls.py under analysis/."""

from django.urls import path

from judging import views_analysis as views

urlpatterns = [
    path("", views.analysis_page, name="analysis"),
    path("nyu/", views.nyu_page, name="analysis_nyu"),
    path("tournament/<int:tournament_id>/", views.tournament_summary, name="tournament_summary"),
    path("compare/", views.compare_tournaments, name="analysis_compare"),
    path("plot/<slug:name>.svg", views.analysis_plot, name="analysis_plot"),
    path("report.json", views.analysis_json, name="analysis_json"),
    path("<slug:table>.csv", views.analysis_csv, name="analysis_csv"),
]
