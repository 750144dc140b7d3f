"""The app's view of hookproxy, for the benchmark: python requests.

usage: pyclient.py --url URL [--proxy PROXY] [--threads T] [--hooks N]
                   [--body-bytes B] [--expect STATUS] [--warmup W]
       pyclient.py --versions

T threads, each with its own requests.Session (as each thread of a Django
app has its own), post N JSON hooks between them to URL, through PROXY
when given (proxies={"http": PROXY}, as HTTP_PROXY would) and straight to
URL otherwise. Each thread first posts W untimed hooks, so connections are
open before timing starts. Prints one JSON object:

  {"latencies_ms": [...], "elapsed_s": wall time of the timed phase,
   "ok": answers with STATUS (warm-up included), "errors": other outcomes,
   "first_error": "..."}

The body is byte for byte the Go load generator's (bench/systems.go,
hookBody), "bench_hook" marker included, padded to B bytes.
"""
import argparse
import json
import sys
import threading
import time

import requests

MARKER = '"bench_hook"'


def padding(n):
    """n pseudo-random letters and digits, the same as hookBody's."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    out, x = [], 1
    for _ in range(max(n, 0)):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(alphabet[(x >> 16) % len(alphabet)])
    return "".join(out)


def hook_body(size, target):
    head = ('{"hook": {"id": 1, "event": "book.added", "target": %s}, '
            '%s: 1, "data": {"model": "books.book", "pk": 21, '
            '"fields": {"title": "Dune", "pad": "') % (json.dumps(target), MARKER)
    tail = '"}}}'
    return (head + padding(size - len(head) - len(tail)) + tail).encode()


class Worker(threading.Thread):
    """One app thread: its own Session, its share of the hooks."""

    def __init__(self, args, count, body, barrier):
        super().__init__(daemon=True)
        self.args, self.count, self.body, self.barrier = args, count, body, barrier
        self.latencies, self.ok, self.errors, self.first_error = [], 0, 0, ""
        self.session = requests.Session()
        self.session.trust_env = False  # only the proxy given, never the environment's
        self.proxies = {"http": args.proxy} if args.proxy else {}

    def post(self):
        try:
            resp = self.session.post(
                self.args.url, data=self.body, proxies=self.proxies, timeout=30,
                headers={"Content-Type": "application/json"})
            resp.content  # read the answer, as the app's requests does
            if resp.status_code == self.args.expect:
                self.ok += 1
                return
            err = "status %d" % resp.status_code
        except requests.RequestException as e:
            err = repr(e)
        self.errors += 1
        self.first_error = self.first_error or err

    def run(self):
        for _ in range(self.args.warmup):
            self.post()
        self.barrier.wait()
        for _ in range(self.count):
            start = time.perf_counter()
            self.post()
            self.latencies.append((time.perf_counter() - start) * 1000)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--proxy", default="")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hooks", type=int, default=100)
    p.add_argument("--body-bytes", type=int, default=400)
    p.add_argument("--expect", type=int, default=202)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--versions", action="store_true")
    args = p.parse_args()
    if args.versions:
        json.dump({"python": sys.version.split()[0], "requests": requests.__version__}, sys.stdout)
        return
    body = hook_body(args.body_bytes, args.url)
    barrier = threading.Barrier(args.threads + 1, timeout=120)
    share, extra = divmod(args.hooks, args.threads)
    workers = [Worker(args, share + (1 if i < extra else 0), body, barrier)
               for i in range(args.threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    json.dump({
        "latencies_ms": [x for w in workers for x in w.latencies],
        "elapsed_s": elapsed,
        "ok": sum(w.ok for w in workers),
        "errors": sum(w.errors for w in workers),
        "first_error": next((w.first_error for w in workers if w.first_error), ""),
    }, sys.stdout)


if __name__ == "__main__":
    main()
