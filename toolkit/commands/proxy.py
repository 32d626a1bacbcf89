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
class ProxySite:
    domain: str
    upstreams: tuple[str, ...]  # host:port
    health_path: str | None = None
    routes: tuple[ProxyRoute, ...] = ()


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
        for route in sorted(site.routes, key=lambda r: -len(r.path)):
            lines.append(f"\thandle {quote(route.path.rstrip('/') + '*')} {{")
            lines += ["\t" + line for line in _reverse_proxy(route.upstreams, route.health_path)]
            lines.append("\t}")
        if site.routes:
            lines.append("\thandle {")
            lines += ["\t" + line for line in _reverse_proxy(site.upstreams, site.health_path)]
            lines.append("\t}")
        else:
            lines += _reverse_proxy(site.upstreams, site.health_path)
        lines.append("}")
    return "\n".join(lines) + "\n"


def _reverse_proxy(upstreams: tuple[str, ...], health_path: str | None) -> list[str]:
    lines = [f"\treverse_proxy {' '.join(quote(u) for u in upstreams)} {{",
             "\t\tlb_policy round_robin",
             "\t\tlb_try_duration 10s",
             "\t\tfail_duration 5s"]
    if health_path:
        lines += [f"\t\thealth_uri {quote(health_path)}", "\t\thealth_interval 2s"]
    return lines + ["\t}"]


def caddy_argv(config_path: str) -> list[str]:
    return ["caddy", "run", "--config", config_path, "--adapter", "caddyfile"]
