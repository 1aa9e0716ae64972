from django.apps import AppConfig


class DebatersConfig(AppConfig):
    name = "debaters"
