from django.core.management.base import BaseCommand

from books.models import Book


class Command(BaseCommand):
    help = "Add N books; each one fires book.added to every subscriber."

    def add_arguments(self, parser):
        parser.add_argument("n", type=int, nargs="?", default=1)
        parser.add_argument("--title", default="Book", help="title prefix")

    def handle(self, *args, **opts):
        for i in range(opts["n"]):
            b = Book.objects.create(title="%s %d" % (opts["title"], i + 1))
            self.stdout.write("added book %d: %s" % (b.pk, b.title))
