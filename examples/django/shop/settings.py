"""Settings of the example shop: a Django app that sends webhooks with
django-rest-hooks and knows nothing of hookproxy.

hookproxy reaches it only through the environment, which python requests
reads on every hook it posts:

    HTTP_PROXY / HTTPS_PROXY   hookproxy's proxy address
    NO_PROXY                   what must not go through hookproxy
    REQUESTS_CA_BUNDLE         the bundle hookproxy writes (system roots +
                               its CA), for hooks to https:// targets

Nothing below mentions hookproxy.
"""
import os
from urllib.parse import unquote, urlparse

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_hooks",
    "books",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"


def database(url):
    """DATABASES["default"] from a URL: sqlite:///relative/path,
    sqlite:////absolute/path or postgres://user:password@host:port/name."""
    u = urlparse(url)
    if u.scheme == "sqlite":
        path = u.path[1:] if u.path.startswith("/") else u.path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path or os.path.join(BASE_DIR, "db.sqlite3")}
    if u.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": u.path.lstrip("/"),
            "USER": unquote(u.username or ""),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "",
            "PORT": str(u.port or ""),
        }
    raise ValueError("DATABASE_URL: want sqlite:///PATH or postgres://..., got %r" % url)


DATABASES = {"default": database(os.environ.get("DATABASE_URL", "sqlite:///" + os.path.join(BASE_DIR, "db.sqlite3")))}

# django-rest-hooks: the events that fire a webhook. "+" sends the event to
# every subscriber of it, whoever owns the subscription.
HOOK_EVENTS = {
    "book.added": "books.Book.created+",
    "book.changed": "books.Book.updated+",
    "book.removed": "books.Book.deleted+",
}
# Post each hook from the thread that saved the object. Through hookproxy a
# hook post takes milliseconds (hookproxy answers once the hook is on disk),
# so django-rest-hooks' own thread pool buys nothing, and posting in line
# keeps hooks in the order of the saves (the pool sends newest first).
HOOK_THREADING = os.environ.get("HOOK_THREADING", "0") == "1"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
