"""A small JSON API: add books (each one fires "book.added") and manage
subscriptions, for curl:

    curl -X POST localhost:8000/books/ -d '{"title": "Dune"}'
    curl -X POST localhost:8000/hooks/ -d '{"target": "http://receiver:8000/hooks/books"}'
"""
import json

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_hooks.models import Hook

from books.models import Book
from books.subscriptions import subscribe


def body(request):
    """The request's JSON object, or its form fields."""
    if request.content_type == "application/json" or request.body[:1] == b"{":
        return json.loads(request.body or b"{}")
    return request.POST.dict()


@csrf_exempt
def books(request):
    if request.method == "POST":
        fields = body(request)
        if not fields.get("title"):
            return JsonResponse({"error": "title is required"}, status=400)
        b = Book.objects.create(title=fields["title"], author=fields.get("author", ""))
        return JsonResponse({"id": b.pk, "title": b.title, "author": b.author}, status=201)
    if request.method == "GET":
        return JsonResponse({"books": list(Book.objects.order_by("pk").values("id", "title", "author"))})
    return JsonResponse({"error": "GET or POST"}, status=405)


@csrf_exempt
def hooks(request):
    if request.method == "POST":
        fields = body(request)
        try:
            hook, created = subscribe(fields.get("target", ""), fields.get("event", "book.added"))
        except ValidationError as e:
            return JsonResponse({"error": e.messages}, status=400)
        return JsonResponse(hook.dict(), status=201 if created else 200)
    if request.method == "GET":
        return JsonResponse({"hooks": [h.dict() for h in Hook.objects.order_by("pk")]})
    return JsonResponse({"error": "GET or POST"}, status=405)
