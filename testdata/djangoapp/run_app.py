"""Run the example app: subscribe targets to book.added, then add books.

usage: run_app.py N TARGET [TARGET ...]

Every book fires one webhook per target through django-rest-hooks, which
posts with python requests (and so through HTTP_PROXY / HTTPS_PROXY).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_hooks.models import Hook  # noqa: E402

from books.models import Book  # noqa: E402


def main():
    n = int(sys.argv[1])
    targets = sys.argv[2:]
    call_command("migrate", run_syncdb=True, verbosity=0)
    user, _ = User.objects.get_or_create(username="shop")
    for target in targets:
        Hook.objects.get_or_create(user=user, event="book.added", target=target)
    for i in range(n):
        Book.objects.create(title="book %d" % i, user=user)
    print("created %d books for %d targets" % (n, len(targets)))


if __name__ == "__main__":
    main()
