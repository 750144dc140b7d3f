"""The app's HTTP client, for tests: python requests through a proxy.

usage: client.py PROXY_URL < requests.json > responses.json

Reads a JSON list of requests ({"method", "url", "body", "headers"}) and
sends them in order on one requests.Session (so the proxy connection is
reused, as django-rest-hooks does), with the proxy set for http and https.
Writes a JSON list of responses ({"status", "headers", "body"}).
"""
import json
import sys

import requests


def main():
    proxy = sys.argv[1]
    reqs = json.load(sys.stdin)
    session = requests.Session()
    session.trust_env = True  # REQUESTS_CA_BUNDLE, as the app would
    out = []
    for r in reqs:
        resp = session.request(
            r.get("method", "POST"),
            r["url"],
            data=r.get("body", "").encode(),
            headers=r.get("headers") or {},
            proxies={"http": proxy, "https": proxy},
            timeout=30,
        )
        out.append({"status": resp.status_code, "headers": dict(resp.headers), "body": resp.text})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
