"""The health check of a web service, asked the way the proxy in front of it asks: ``Host`` is the stack's
domain (an app that checks it, as Django's ALLOWED_HOSTS or Rails' host authorization do, answers 400 to an
address), ``X-Forwarded-Proto`` says whether the public side is HTTPS (an app that forces HTTPS would
otherwise redirect), and a redirect is an answer, never followed (a redirect to the public https:// URL
would leave the host). Healthy: a status from 200 to 399.

:data:`PROBE` is the same check as a program (``python3 -c PROBE URL "Name: value"...``, exit 0 when
healthy) for hosts, where it runs beside the app.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

PROBE = r"""
import http.client, sys
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
headers = dict(h.split(": ", 1) for h in sys.argv[2:])
headers.setdefault("User-Agent", "lifeboat-health")
try:
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=3)
    conn.request("GET", (url.path or "/") + ("?" + url.query if url.query else ""), headers=headers)
    status = conn.getresponse().status
except Exception:
    sys.exit(1)
sys.exit(0 if 200 <= status < 400 else 1)
"""


def proxy_headers(stack) -> dict[str, str]:
    """What the TLS proxy would send the app: the site's name, the public scheme, the client's address."""
    return {"Host": stack.domain, "X-Forwarded-Proto": "https" if stack.tls else "http",
            "X-Forwarded-For": "127.0.0.1"}


def healthy(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> bool:
    """:data:`PROBE`, in this process."""
    parts = urlsplit(url)
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        conn.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""),
                     headers={"User-Agent": "lifeboat-health", **(headers or {})})
        status = conn.getresponse().status
        conn.close()
    except (OSError, http.client.HTTPException):
        return False
    return 200 <= status < 400
