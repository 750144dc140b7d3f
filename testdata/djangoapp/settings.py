# A minimal Django project that sends webhooks with django-rest-hooks,
# unchanged: hookproxy reaches it only through HTTP_PROXY / HTTPS_PROXY.
import os

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = "hookproxy-test-only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_hooks",
    "books",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("APP_DB", os.path.join(BASE_DIR, "db.sqlite3")),
    }
}
HOOK_EVENTS = {
    "book.added": "books.Book.created",
}
# Deliver from the saving thread, so the order of hooks is the order of saves.
HOOK_THREADING = os.environ.get("APP_HOOK_THREADING", "0") == "1"
