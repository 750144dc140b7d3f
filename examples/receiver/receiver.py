"""A small webhook receiver for the hookproxy demo (Python standard library only).

usage: receiver.py [HOST:PORT]      (default: RECEIVER_LISTEN or 0.0.0.0:8000)

It logs every request it gets on standard output, one line each: the path,
the batch id, how many hooks the batch holds and which events and objects
they are about. A body that is a JSON array is a batch from hookproxy; a JSON
object is a single hook (hookproxy without batching, or the app posting
directly).

When WEBHOOK_SECRET is set (a Standard Webhooks secret, "whsec_" followed by
base64), every POST must carry valid webhook-id, webhook-timestamp and
webhook-signature headers (https://www.standardwebhooks.com): a request
without them, with a wrong signature or with a timestamp more than five
minutes away is answered 401 and not processed.

A request whose Idempotency-Key (or webhook-id) was already processed is
answered 200 and dropped: hookproxy delivers at least once, so a batch can
arrive twice, always with the same key.

GET /healthz answers 200.
"""
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# How far a webhook-timestamp may be from the receiver's clock.
TOLERANCE_SECONDS = 5 * 60
# How many processed keys are remembered to drop repeats.
REMEMBER = 10000


def log(msg):
    print(msg, flush=True)


def secret_key(secret):
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64)."""
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret)


def verify(key, headers, body, now=None):
    """Check a Standard Webhooks signature; return None if it is valid,
    or the reason it is not."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts = int(stamp)
    except ValueError:
        return "webhook-timestamp is not a number"
    now = time.time() if now is None else now
    if abs(now - ts) > TOLERANCE_SECONDS:
        return "webhook-timestamp too far from now"
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for sig in signatures.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), want):
            return None
    return "no valid v1 signature"


def describe(hook):
    """A short description of one django-rest-hooks body."""
    if not isinstance(hook, dict):
        return "?"
    event = (hook.get("hook") or {}).get("event", "?")
    data = hook.get("data") or {}
    pk = data.get("pk", "?") if isinstance(data, dict) else "?"
    return "%s #%s" % (event, pk)


class Seen:
    """The idempotency keys already processed (the last REMEMBER of them)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keys = {}

    def add(self, key):
        """Remember key; return False if it was there already."""
        with self.lock:
            if key in self.keys:
                return False
            self.keys[key] = None
            if len(self.keys) > REMEMBER:
                del self.keys[next(iter(self.keys))]
            return True


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that drops its connection (a sender's timeout, an idle
        # connection closed) is no error of the receiver's: no traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server_version = "hookproxy-demo-receiver"
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, {"status": "ok"})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        key = self.server.key
        if key is not None:
            why = verify(key, self.headers, body)
            if why is not None:
                log("REJECTED %s: %s" % (self.path, why))
                self.answer(401, {"error": why})
                return
        batch_id = self.headers.get("Idempotency-Key") or self.headers.get("webhook-id") or "-"
        if batch_id != "-" and not self.server.seen.add(batch_id):
            log("repeat of %s on %s: dropped" % (batch_id, self.path))
            self.answer(200, {"repeat": True})
            return
        try:
            payload = json.loads(body)
        except ValueError:
            log("REJECTED %s: body is not JSON" % self.path)
            self.answer(400, {"error": "body is not JSON"})
            return
        hooks = payload if isinstance(payload, list) else [payload]
        kind = "batch" if isinstance(payload, list) else "single hook"
        signed = ", signature ok" if key is not None else ""
        log("%s %s on %s: %d hook%s: %s%s" % (
            kind, batch_id, self.path, len(hooks), "" if len(hooks) == 1 else "s",
            ", ".join(describe(h) for h in hooks), signed))
        self.answer(200, {"received": len(hooks)})

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass  # one line per request is written by the handlers


def main():
    listen = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RECEIVER_LISTEN", "0.0.0.0:8000")
    host, _, port = listen.rpartition(":")
    server = Server((host or "0.0.0.0", int(port)), Handler)
    secret = os.environ.get("WEBHOOK_SECRET", "")
    server.key = secret_key(secret) if secret else None
    server.seen = Seen()
    log("receiver listening on %s:%d, signatures %s" % (
        server.server_address[0], server.server_address[1],
        "required" if server.key is not None else "not checked (WEBHOOK_SECRET unset)"))
    # As PID 1 in a container, SIGTERM would be ignored without a handler.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
