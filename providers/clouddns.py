"""DNS at the clouds that host one: ``type: digitalocean-dns`` (DigitalOcean's v2 API, domain records) and
``type: hetzner-dns`` (the Hetzner Cloud API's zones and RRsets). DNS-only targets, like ``rfc2136``: a
stack names one under ``dns: provider:``, or a ``type: terraform`` module hands one out through its
``lifeboat_dns`` output (providers.tfmodule).

Both speak JSON over HTTPS with a bearer token read from the environment variable named by ``token_env``
(never from the stack file, never printed; a plain-http ``endpoint`` is refused unless it is on this
machine). A change counts as done when the API reads it back (``confirm``); these clouds take no RFC 2136
updates, and their nameservers follow their API within seconds.

Record values are written as in a zone file, as everywhere in Lifeboat: TXT quoted, CNAME/MX targets as
absolute names, MX as "priority target", CAA as 'flags tag "value"'. The zone's own SOA and NS records
belong to the cloud and are left alone.

Tested in Lifeboat's CI against fakes of the two APIs (tests/clouddnslab.py: the requests, paging and
asynchronous actions as documented), not against the clouds themselves: say so where it matters.
"""

from __future__ import annotations

from toolkit.config.schema import Field, Int, Str
from toolkit.contract import DnsOnlyProvider
from toolkit.dns.clouddns import ENV_NAME, CloudDns, DigitalOceanDns, HetznerDns, JsonApi


class _CloudDnsProvider(DnsOnlyProvider):
    """A DNS-only target speaking one cloud's DNS API."""

    FEATURES = {"confirm_on_authoritative": False}
    ENDPOINT = ""
    SERVICE: type[CloudDns] = CloudDns

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self._dns: CloudDns | None = None

    def dns(self) -> CloudDns:
        if self._dns is None:
            s = self.settings
            api = JsonApi(label=self.label, endpoint=s.get("endpoint") or self.ENDPOINT, token_env=s["token_env"],
                          timeout=float(s.get("timeout") or 20))
            self._dns = self.SERVICE(api, confirm_seconds=float(s.get("confirm_seconds") or 300))
        return self._dns

    def check(self) -> dict:
        service = self.dns()
        out: dict = {"endpoint": service.api.endpoint, "token_env": service.api.token_env}
        if self.stack.dns:  # the token is refused, or the zone unknown, here, before anything else runs
            out["zone"] = self.stack.dns.zone
            out["records"] = len(service.records(self.stack.dns.zone))
        return out


def _settings(default_endpoint: str) -> dict:
    return {
        "token_env": Field(Str(pattern=ENV_NAME, expected="the name of an environment variable holding the API token"),
                           required=True),
        "endpoint": Field(Str(expected="the API's base URL"), doc=f"default {default_endpoint}"),
        "timeout": Field(Int(min=1, max=120), default=20),
        "confirm_seconds": Field(Int(min=1, max=3600), default=300),
    }


class DigitalOceanDnsProvider(_CloudDnsProvider):
    TYPE = "digitalocean-dns"
    DESCRIPTION = "DNS only: a domain's records at DigitalOcean (v2 API; tested here against a fake of the API)"
    ENDPOINT = "https://api.digitalocean.com"
    SERVICE = DigitalOceanDns
    SETTINGS = _settings(ENDPOINT)


class HetznerDnsProvider(_CloudDnsProvider):
    TYPE = "hetzner-dns"
    DESCRIPTION = "DNS only: a primary zone's RRsets in the Hetzner Cloud API (tested here against a fake of the API)"
    ENDPOINT = "https://api.hetzner.cloud/v1"
    SERVICE = HetznerDns
    SETTINGS = _settings(ENDPOINT)
