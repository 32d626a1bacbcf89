"""The reverse proxy in front of web services: a Caddyfile built as data (pure, tested as text).

Caddy terminates TLS with a certificate from ACME (Let's Encrypt, or any ACME CA such as pebble) or one
given as secrets, and balances over the web replicas of its host with health checks, so a replica that
restarts is taken out of rotation while it does.
"""

from __future__ import annotations

from dataclasses import dataclass


def quote(value: str) -> str:
    """A Caddyfile token: double-quoted, with backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ProxyRoute:
    """Requests under ``path`` (a prefix) go to another service's replicas."""

    path: str
    upstreams: tuple[str, ...]
    health_path: str | None = None


@dataclass(frozen=True)
class ProxyServe:
    """Requests under ``path`` (a prefix ending in /) answered by the proxy itself, GET and HEAD only: files
    of the folder ``root`` on this host, or objects through the media gateway at ``gateway`` (host:port),
    with the gateway's ``token`` (the Caddyfile is 0600): ``bucket`` is BUCKET or BUCKET/KEY-PREFIX, what
    the rest of the path is appended to."""

    path: str
    root: str | None = None
    gateway: str | None = None
    bucket: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class ProxySite:
    domain: str
    upstreams: tuple[str, ...]  # host:port
    health_path: str | None = None
    routes: tuple[ProxyRoute, ...] = ()
    served: tuple[ProxyServe, ...] = ()


@dataclass(frozen=True)
class ProxyConfig:
    bind: str
    http_port: int
    https_port: int
    storage: str
    sites: tuple[ProxySite, ...]
    acme_email: str | None = None
    acme_ca: str | None = None
    acme_ca_root: str | None = None
    certificate: str | None = None  # a certificate file (PEM, with its chain) instead of ACME
    key: str | None = None


def caddyfile(config: ProxyConfig) -> str:
    lines = ["# Written by Lifeboat; changes are overwritten on the next `lifeboat up`.", "{",
             "\tadmin off",
             f"\tdefault_bind {quote(config.bind)}",
             f"\thttp_port {int(config.http_port)}",
             f"\thttps_port {int(config.https_port)}",
             f"\tstorage file_system {quote(config.storage)}",
             "\tskip_install_trust",
             "\tocsp_stapling off"]
    if config.certificate is None:
        if config.acme_email:
            lines.append(f"\temail {quote(config.acme_email)}")
        if config.acme_ca:
            lines.append(f"\tacme_ca {quote(config.acme_ca)}")
        if config.acme_ca_root:
            lines.append(f"\tacme_ca_root {quote(config.acme_ca_root)}")
    lines.append("}")
    for site in config.sites:
        lines.append(f"{site.domain} {{")
        if config.certificate is not None:
            lines.append(f"\ttls {quote(config.certificate)} {quote(config.key)}")
        # longer prefixes first; the site's own service takes everything else
        for item in sorted((*site.routes, *site.served), key=lambda r: -len(r.path)):
            if isinstance(item, ProxyServe):
                lines += _served(item)
                continue
            lines.append(f"\thandle {quote(item.path.rstrip('/') + '*')} {{")
            lines += ["\t" + line for line in _reverse_proxy(item.upstreams, item.health_path, site.domain)]
            lines.append("\t}")
        if site.routes or site.served:
            lines.append("\thandle {")
            lines += ["\t" + line for line in _reverse_proxy(site.upstreams, site.health_path, site.domain)]
            lines.append("\t}")
        else:
            lines += _reverse_proxy(site.upstreams, site.health_path, site.domain)
        lines.append("}")
    return "\n".join(lines) + "\n"


def _served(item: ProxyServe) -> list[str]:
    """A path the proxy answers itself, in the order written (route): writes refused, then the folder's
    files (the prefix stripped) or the bucket's objects through the gateway (never a listing of it)."""
    lines = [f"\thandle_path {quote(item.path.rstrip('/') + '/*')} {{", "\t\troute {",
             "\t\t\t@write not method GET HEAD", "\t\t\trespond @write 405"]
    if item.root is not None:
        lines += [f"\t\t\troot * {quote(item.root)}", "\t\t\tfile_server"]
        return lines + ["\t\t}", "\t}"]
    # the path goes to the gateway as the client encoded it (a rewrite would decode ? and # in keys); the
    # gateway reads the key from it after the prefix, told which bucket by a header only the proxy sets
    prefix = item.path.rstrip("/") + "/"
    lines = [f"\thandle {quote(prefix + '*')} {{", "\t\troute {",
             "\t\t\t@write not method GET HEAD", "\t\t\trespond @write 405",
             f"\t\t\trespond {quote(prefix)} 404",
             f"\t\t\treverse_proxy {quote(item.gateway)} {{",
             f"\t\t\t\theader_up Authorization {quote('Bearer ' + item.token)}",
             f"\t\t\t\theader_up X-Lifeboat-Serve {quote(prefix + ' ' + item.bucket + '/')}",
             "\t\t\t}"]
    return lines + ["\t\t}", "\t}"]


def _reverse_proxy(upstreams: tuple[str, ...], health_path: str | None, domain: str) -> list[str]:
    lines = [f"\treverse_proxy {' '.join(quote(u) for u in upstreams)} {{",
             "\t\tlb_policy round_robin",
             "\t\tlb_try_duration 10s",
             "\t\tfail_duration 5s"]
    if health_path:
        # asked as the site's requests are (toolkit/hostops/health.py): an app that checks Host answers
        lines += [f"\t\thealth_uri {quote(health_path)}", "\t\thealth_interval 2s", "\t\thealth_headers {",
                  f"\t\t\tHost {quote(domain)}", '\t\t\tX-Forwarded-Proto "https"', "\t\t}"]
    return lines + ["\t}"]


def caddy_argv(config_path: str) -> list[str]:
    return ["caddy", "run", "--config", config_path, "--adapter", "caddyfile"]
