import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from books.subscriptions import subscribe


class Command(BaseCommand):
    help = "Subscribe target URLs to an event (default: the URLs in DEMO_TARGETS, comma-separated)."

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="*", help="target URLs")
        parser.add_argument("--event", action="append", help="event to subscribe to (repeatable; default book.added)")

    def handle(self, *args, **opts):
        targets = opts["targets"] or [t for t in os.environ.get("DEMO_TARGETS", "").split(",") if t.strip()]
        if not targets:
            raise CommandError("no target: give URLs or set DEMO_TARGETS")
        for target in targets:
            for event in opts["event"] or ["book.added"]:
                try:
                    hook, created = subscribe(target.strip(), event)
                except ValidationError as e:
                    raise CommandError("%s: %s" % (target, "; ".join(e.messages)))
                self.stdout.write("%s %s -> %s" % ("subscribed" if created else "already subscribed", event, hook.target))
