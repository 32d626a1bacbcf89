"""The health check of a web service, asked the way the proxy in front of it asks: ``Host`` is the stack's
domain (an app that checks it, as Django's ALLOWED_HOSTS or Rails' host authorization do, answers 400 to an
address), ``X-Forwarded-Proto`` says whether the public side is HTTPS (an app that forces HTTPS would
otherwise redirect), and a redirect is an answer, never followed (a redirect to the public https:// URL
would leave the host). Healthy: a status from 200 to 399.

This file is also the program that asks on a host, beside the app (:func:`probe_program`: ``python3 -c
TEXT URL "Name: value"...``, exit 0 when healthy): so standard library only, and no syntax newer than the
hosts' python3 reads.
"""

import http.client
import sys
from urllib.parse import urlsplit


def healthy(url, headers=None, timeout=3.0):
    """Whether ``url`` answers GET, asked with ``headers``, with a status from 200 to 399 (not followed)."""
    parts = urlsplit(url)
    sent = {"User-Agent": "lifeboat-health"}
    sent.update(headers or {})
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        conn.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""), headers=sent)
        status = conn.getresponse().status
        conn.close()
    except Exception:
        return False
    return 200 <= status < 400


def proxy_headers(stack):
    """What the TLS proxy would send the app: the site's name, the public scheme, the client's address."""
    return {"Host": stack.domain, "X-Forwarded-Proto": "https" if stack.tls else "http",
            "X-Forwarded-For": "127.0.0.1"}


def probe_program():
    """This file's text: the check as a program for a host."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


if __name__ == "__main__":  # python3 -c TEXT URL "Name: value"...
    sys.exit(0 if healthy(sys.argv[1], dict(h.split(": ", 1) for h in sys.argv[2:])) else 1)
