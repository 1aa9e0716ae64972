"""Export pages, included by arena/urls.py under ``exports/``."""

from django.urls import path

from judging import views_exports

urlpatterns = [
    path("", views_exports.exports, name="exports"),
    path("<int:export_id>/status/", views_exports.export_status, name="export_status"),
    path("<int:export_id>/download/", views_exports.export_download, name="export_download"),
    path("<int:export_id>/card/", views_exports.export_card_page, name="export_card_page"),
    path("<int:export_id>/README.md", views_exports.export_card, name="export_card"),
    path("<int:export_id>/datasets.zip", views_exports.export_datasets, name="export_datasets"),
]
