"""Django settings, read from the environment (see .env.example for every variable)."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from arena.env import env, envbool, envfloat, envint, envlist

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env("ARENA_DATA_DIR", str(BASE_DIR / "data")))

DEBUG = envbool("DEBUG", "False")
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env("ARENA_ALLOW_DEV_SECRET", "True") != "True":
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY must be set")
    # The embedded quickstart keeps a random key in its data folder so sessions survive restarts.
    from arena.embedded import local_secret_key

    SECRET_KEY = local_secret_key(DATA_DIR)

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "arena",
    "debaters",
    "judging",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it is synchronous only, so under ASGI every middleware above it runs synchronously too,
    # in one go on the request's thread. In the middle it split the chain: the ones below it ran
    # asynchronously, each of their steps a round trip between the event loop and that thread.
    "arena.ratelimit.LoginThrottleMiddleware",
]

ROOT_URLCONF = "arena.urls"
ASGI_APPLICATION = "arena.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "arena.roles.roles_context",
            ],
        },
    },
]

_database_url = env("DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=envint("DB_CONN_MAX_AGE", "0"))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "arena.sqlite3",
            # Web and worker write concurrently: WAL lets readers go on during a write, and
            # IMMEDIATE transactions wait for the lock instead of failing on upgrade.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # Kept open between requests by the web process's few long-lived threads
            # (ARENA_WEB_THREADS) instead of opened, set up and closed for each one.
            "CONN_MAX_AGE": envint("DB_CONN_MAX_AGE", "600"),
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_redis_url = env("REDIS_URL")
EMBEDDED_REDIS = not _redis_url
EMBEDDED_REDIS_PORT = envint("ARENA_EMBEDDED_REDIS_PORT", "6390")
REDIS_URL = _redis_url or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"

# "pubsub" (default): one PUBLISH per message and one subscriber connection per web process, which
# fans out to its own sockets in memory. "core": channels-redis' list layer, what the app used
# before: a copy per message in Redis, a capacity per channel that drops messages when a process
# falls behind, and a pooled connection per group_add (redis-py 8 caps a pool at 100, so 1,000
# spectators connecting at once failed with MaxConnectionsError). docs/streaming.md has the figures.
ARENA_CHANNEL_LAYER = env("ARENA_CHANNEL_LAYER", "pubsub")
_CHANNEL_BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
if ARENA_CHANNEL_LAYER not in _CHANNEL_BACKENDS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"ARENA_CHANNEL_LAYER must be pubsub or core, not {ARENA_CHANNEL_LAYER!r}")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _CHANNEL_BACKENDS[ARENA_CHANNEL_LAYER],
        "CONFIG": {
            # redis-py 8 times socket reads out after 5 s by default, the same 5 s that
            # channels-redis blocks in BZPOPMIN: an idle page would lose its consumer. Read longer.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": env("ARENA_CHANNEL_PREFIX", "arena"),
        },
    }
}
# Connections of a web process's own Redis client (snapshots read the in-flight text): callers wait
# for a free one instead of failing when a crowd connects at once.
ARENA_REDIS_MAX_CONNECTIONS = envint("ARENA_REDIS_MAX_CONNECTIONS", "50")

# Abuse limits (arena/ratelimit.py; every one documented in .env.example). Counters live in Redis,
# shared by every web process, under their own cache alias so nothing else evicts them.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "limits": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{env('ARENA_CHANNEL_PREFIX', 'arena')}:limits",
    },
}
ARENA_LOGIN_FAILURES = envint("ARENA_LOGIN_FAILURES", "5")
ARENA_LOGIN_WINDOW_S = envint("ARENA_LOGIN_WINDOW_S", "900")
ARENA_LOGIN_LOCKOUT_S = envint("ARENA_LOGIN_LOCKOUT_S", "300")
ARENA_LOGIN_IP_FAILURES = envint("ARENA_LOGIN_IP_FAILURES", "50")
ARENA_POST_LIMITS = {
    "verdict": envint("ARENA_VERDICT_POSTS_PER_MINUTE", "20"),
    "question": envint("ARENA_QUESTION_POSTS_PER_MINUTE", "10"),
    "invitation": envint("ARENA_INVITATION_POSTS_PER_MINUTE", "30"),
}
ARENA_WS_FRAMES_PER_MINUTE = envint("ARENA_WS_FRAMES_PER_MINUTE", "60")
ARENA_WS_SNAPSHOTS_PER_MINUTE = envint("ARENA_WS_SNAPSHOTS_PER_MINUTE", "12")
ARENA_WS_SOCKETS_PER_SESSION = envint("ARENA_WS_SOCKETS_PER_SESSION", "20")
# The per-session cap holds across all web processes (a count in Redis, arena/ratelimit.py). Each
# process refreshes its sockets' places every third of this many seconds; those of a process that
# died without closing its sockets are free again after at most this long.
ARENA_WS_SOCKET_TTL_S = envint("ARENA_WS_SOCKET_TTL_S", "60")
if ARENA_WS_SOCKET_TTL_S < 3:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"ARENA_WS_SOCKET_TTL_S must be at least 3 seconds, not {ARENA_WS_SOCKET_TTL_S}")
# Seconds Daphne (under `serve`) gives a WebSocket handshake. Its default, 5 s, refused most of a
# thousand spectators arriving together on two cores: each handshake reads the session, the access
# rights and a snapshot, and they queue for the one thread the ORM runs on.
ARENA_WS_CONNECT_TIMEOUT_S = envint("ARENA_WS_CONNECT_TIMEOUT_S", "60")
# How live events reach the sockets of a web process (arena/fanout.py): "broadcast", one group
# member per debate writing every socket a frame per pass (several events in a batch under load), or
# "per-socket", every socket a group member with a frame per event (the path before; the benchmarks'
# baseline).
ARENA_WS_FANOUT = env("ARENA_WS_FANOUT", "broadcast")
if ARENA_WS_FANOUT not in ("broadcast", "per-socket"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"ARENA_WS_FANOUT must be broadcast or per-socket, not {ARENA_WS_FANOUT!r}")
# The broadcaster's least interval between two passes over its sockets, in milliseconds: 0 writes
# as soon as the last pass is done (batches form only when a pass falls behind).
ARENA_WS_TICK_MS = envint("ARENA_WS_TICK_MS", "0")
# Daphne processes `serve` runs on its one address (they share the listening socket): fan-out to a
# crowd is CPU work, and each process writes only its own sockets (docs/streaming.md).
ARENA_WEB_PROCESSES = envint("ARENA_WEB_PROCESSES", "1")
# Long-lived threads a web process runs Django's synchronous code on (views, middleware, the ORM),
# each request on the least busy one; each thread keeps its database connection (CONN_MAX_AGE).
# 0: Django's default under ASGI, a new thread (so a new connection) per request (arena/web_threads.py).
ARENA_WEB_THREADS = envint("ARENA_WEB_THREADS", "4")
if ARENA_WEB_THREADS < 0:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"ARENA_WEB_THREADS must be 0 or more, not {ARENA_WEB_THREADS}")
# The niceness `serve` gives its Celery worker (0-19; 0: the web's). On one machine the model's
# compute then yields to the web process, which writes every socket when a delta comes.
ARENA_WORKER_NICE = envint("ARENA_WORKER_NICE", "10")
if not 0 <= ARENA_WORKER_NICE <= 19:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"ARENA_WORKER_NICE must be 0 to 19, not {ARENA_WORKER_NICE}")

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A killed worker's unacknowledged task is redelivered after this many seconds. Debates hold a
# lease (ARENA_LEASE_SECONDS) so a redelivery while the first worker still runs does nothing.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "3600")}
CELERY_TASK_ALWAYS_EAGER = False
# The Redis transport keeps a list per priority step and a worker takes from the lowest number
# first. Work is queued at 5; work taken back from a dead worker (arena/sweep.py) at 0, so that a
# crash does not send the debates it was running behind every debate that has not started yet.
CELERY_TASK_DEFAULT_PRIORITY = 5
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", "arena")

ARENA_LEASE_SECONDS = envint("ARENA_LEASE_SECONDS", "120")
# Every worker looks this often (and once at its start) for debates and tournament chunks whose
# worker died and queues them again (arena/sweep.py); 0 turns the sweep off.
ARENA_SWEEP_SECONDS = envint("ARENA_SWEEP_SECONDS", "10")
# A worker loads the in-process models (transformers) of the debates waiting for it while Celery is
# still starting, instead of when its first debate asks (arena/tasks.py): a worker restarted after a
# crash gets its debates moving sooner.
ARENA_WORKER_WARM = envbool("ARENA_WORKER_WARM", "True")
ARENA_STREAM_FLUSH_MS = envint("ARENA_STREAM_FLUSH_MS", "50")
# Human judging (docs/judging.md): how long a judge holds a study debate, how long a judge of an
# interactive debate has to ask a question, how long an invitation link stays valid.
ARENA_JUDGE_LEASE_SECONDS = envint("ARENA_JUDGE_LEASE_SECONDS", "3600")
ARENA_JUDGE_QUESTION_SECONDS = envint("ARENA_JUDGE_QUESTION_SECONDS", "300")
ARENA_INVITATION_DAYS = envint("ARENA_INVITATION_DAYS", "14")
ARENA_DEFAULT_BACKEND = env("ARENA_DEFAULT_BACKEND", "transformers")
ARENA_DEFAULT_MODEL = env("ARENA_DEFAULT_MODEL", "embedded")
ARENA_DEFAULT_DEVICE = env("ARENA_DEFAULT_DEVICE", "cpu")
ARENA_DEFAULT_MAX_TOKENS = envint("ARENA_DEFAULT_MAX_TOKENS", "160")
ARENA_DEFAULT_CONTEXT_TOKENS = envint("ARENA_DEFAULT_CONTEXT_TOKENS", "700")
ARENA_DEFAULT_TEMPERATURE = envfloat("ARENA_DEFAULT_TEMPERATURE", "0.7")
ARENA_EXPORT_DIR = Path(env("ARENA_EXPORT_DIR", str(DATA_DIR / "exports")))
ARENA_EXPORT_KEY = env("ARENA_EXPORT_KEY", SECRET_KEY)
os.environ.setdefault("ARENA_MODEL_CACHE", str(DATA_DIR / "models" / "smollm2-135m-instruct"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "False")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
ARENA_SERVE_STATIC = envbool("ARENA_SERVE_STATIC", "True")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}},
}
