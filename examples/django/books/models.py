from django.db import models


class Book(models.Model):
    """A book. Creating one fires "book.added" (settings.HOOK_EVENTS):
    django-rest-hooks posts it to every subscriber's target URL."""

    title = models.CharField(max_length=200)
    author = models.CharField(max_length=200, blank=True)
    added = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.title
