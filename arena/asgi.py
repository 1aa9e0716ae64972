"""ASGI entry point: HTTP goes to Django, WebSockets to Channels (session auth, origin check)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.ARENA_SERVE_STATIC:
    # One process serves the whole product in the embedded setup; behind a proxy, set
    # ARENA_SERVE_STATIC=False and let the proxy serve `collectstatic` output.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from arena.web_threads import BoundedSyncThreads  # noqa: E402

# Each HTTP request's synchronous code on one of a few long-lived threads that keep their database
# connections, not on a new thread (and connection) per request (arena/web_threads.py).
django_asgi_app = BoundedSyncThreads(django_asgi_app, settings.ARENA_WEB_THREADS)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from arena.fanout import RawSendMiddleware  # noqa: E402
from arena.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            RawSendMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
