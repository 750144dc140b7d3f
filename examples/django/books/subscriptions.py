"""Subscriptions (django-rest-hooks Hook rows), shared by the view and the
subscribe command."""
import os
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from rest_hooks.models import Hook


def owner():
    """The user who owns the demo's subscriptions."""
    user, _ = get_user_model().objects.get_or_create(username=os.environ.get("DEMO_USER", "shop"))
    return user


def subscribe(target, event="book.added"):
    """Subscribe target to event; return (hook, created). A repeated
    subscription is not added twice."""
    if event not in settings.HOOK_EVENTS:
        raise ValidationError("unknown event %r; known: %s" % (event, ", ".join(sorted(settings.HOOK_EVENTS))))
    # Not Django's URLValidator: it refuses single-label hosts such as a
    # compose service name (http://receiver:8000/...).
    u = urlsplit(target)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValidationError("target %r is not an http:// or https:// URL" % target)
    return Hook.objects.get_or_create(user=owner(), event=event, target=target)
