"""Route53 as the DNS of an aws target: changes wait for INSYNC."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from toolkit.contract import (
    DnsService,
    Record,
)
from toolkit.errors import ProviderError

if TYPE_CHECKING:
    from toolkit.stores.s3 import S3Api as AwsApi  # anything with client(service)


class Route53Dns(DnsService):
    """Records of hosted zones; every change waits until Route53 reports it INSYNC."""

    NAME = "Route53"

    def __init__(self, api: AwsApi, wait_seconds: int = 300, *, managed_zone: str | None = None):
        self.api = api
        self.wait_seconds = wait_seconds
        self.managed_zone = managed_zone  # made by this target's Terraform: may not exist before the first up
        self._zones: dict[str, str] = {}

    @property
    def r53(self):
        return self.api.client("route53")

    def zone_id(self, zone: str) -> str:
        if zone not in self._zones:
            found = self.r53.list_hosted_zones_by_name(DNSName=zone)
            for item in found.get("HostedZones", []):
                if item["Name"].rstrip(".") == zone.rstrip(".") and not item.get("Config", {}).get("PrivateZone"):
                    self._zones[zone] = item["Id"].split("/")[-1]
                    break
            else:
                raise ProviderError(f"{self.api.label}: no public Route53 hosted zone {zone}.",
                                    hint="name this target as the stack's dns: provider so `up` creates the zone.",
                                    code="aws.no_zone")
        return self._zones[zone]

    def _zone_exists(self, zone: str) -> bool:
        try:
            self.zone_id(zone)
            return True
        except ProviderError:
            return False

    @staticmethod
    def _fqdn(zone: str, name: str) -> str:
        return f"{zone.rstrip('.')}." if name == "@" else f"{name}.{zone.rstrip('.')}."

    def records(self, zone):
        if zone == self.managed_zone and not self._zone_exists(zone):
            return []
        out = []
        paginator = self.r53.get_paginator("list_resource_record_sets")
        apex = f"{zone.rstrip('.')}."
        for page in paginator.paginate(HostedZoneId=self.zone_id(zone)):
            for rr in page.get("ResourceRecordSets", []):
                name = rr["Name"].replace("\\052", "*")
                if name == apex and rr["Type"] in ("SOA", "NS"):
                    continue  # the zone's own records belong to Route53
                relative = "@" if name == apex else name[: -len(apex) - 1]
                values = tuple(v["Value"] for v in rr.get("ResourceRecords", []))
                out.append(Record(relative, rr["Type"], int(rr.get("TTL", 0)), tuple(sorted(values))))
        return out

    def _change(self, zone: str, action: str, record: Record) -> None:
        change = self.r53.change_resource_record_sets(HostedZoneId=self.zone_id(zone), ChangeBatch={"Changes": [{
            "Action": action, "ResourceRecordSet": {
                "Name": self._fqdn(zone, record.name), "Type": record.type, "TTL": record.ttl,
                "ResourceRecords": [{"Value": v} for v in record.values]}}]})
        change_id = change["ChangeInfo"]["Id"]
        deadline = time.monotonic() + self.wait_seconds
        while change["ChangeInfo"]["Status"] != "INSYNC":
            if time.monotonic() > deadline:
                raise ProviderError(f"{self.api.label}: Route53 change {change_id} not INSYNC after "
                                    f"{self.wait_seconds} s.", code="aws.dns_wait")
            time.sleep(2)
            change = self.r53.get_change(Id=change_id)

    def upsert(self, zone, record):
        self._change(zone, "UPSERT", Record(record.name, record.type, record.ttl, tuple(sorted(record.values))))

    def delete(self, zone, name, type):
        for rec in self.records(zone):
            if rec.name == name and rec.type == type:
                self._change(zone, "DELETE", rec)
