"""DNS as zone files in a folder (one per zone, written atomically): the local provider's DNS, which a
resolver such as BIND or CoreDNS can serve from that folder."""

from __future__ import annotations

import time
from pathlib import Path

from toolkit.contract import (
    DnsService,
    Record,
)
from toolkit.paths import private_dir, write_private


class ZoneFileDns(DnsService):
    """Records kept in BIND zone files (one per zone), rewritten atomically with a new serial."""

    NAME = "the zone file"

    def __init__(self, directory: Path):
        self.directory = directory

    def _file(self, zone: str) -> Path:
        return self.directory / f"{zone.rstrip('.')}.zone"

    def _load(self, zone: str):
        import dns.zone

        path = self._file(zone)
        if not path.exists():
            return None
        return dns.zone.from_file(str(path), origin=zone.rstrip(".") + ".", relativize=True)

    def records(self, zone: str) -> list[Record]:
        z = self._load(zone)
        if z is None:
            return []
        out = []
        for name, node in z.nodes.items():
            for rdataset in node.rdatasets:
                import dns.rdatatype

                rtype = dns.rdatatype.to_text(rdataset.rdtype)
                if str(name) == "@" and rtype in ("SOA", "NS"):
                    continue
                values = tuple(sorted(r.to_text() for r in rdataset))
                out.append(Record(str(name), rtype, rdataset.ttl, values))
        return sorted(out, key=lambda r: (r.name, r.type))

    def upsert(self, zone: str, record: Record) -> None:
        import dns.rdata
        import dns.rdataclass
        import dns.rdataset
        import dns.rdatatype

        z = self._load(zone) or self._new_zone(zone)
        rdtype = dns.rdatatype.from_text(record.type)
        rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype)
        rdataset.update_ttl(record.ttl)
        for value in record.values:
            rdataset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=z.origin))
        node = z.find_node(record.name, create=True)
        node.replace_rdataset(rdataset)
        self._save(zone, z)

    def delete(self, zone: str, name: str, type: str) -> None:
        import dns.rdatatype

        z = self._load(zone)
        if z is None:
            return
        z.delete_rdataset(name, dns.rdatatype.from_text(type))
        self._save(zone, z)

    def _new_zone(self, zone: str):
        import dns.zone

        origin = zone.rstrip(".") + "."
        text = (f"$ORIGIN {origin}\n$TTL 300\n"
                f"@ 3600 IN SOA ns1.{origin} hostmaster.{origin} 1 3600 600 604800 300\n"
                f"@ 3600 IN NS ns1.{origin}\n")
        return dns.zone.from_text(text, origin=origin, relativize=True)

    def _save(self, zone: str, z) -> None:
        import dns.rdatatype

        soa = z.find_rdataset("@", dns.rdatatype.SOA)
        old = list(soa)[0]
        soa.add(old.replace(serial=max(old.serial + 1, int(time.time()))), soa.ttl)
        for rdata in list(soa):
            if rdata.serial == old.serial:
                soa.discard(rdata)
        private_dir(self.directory)
        write_private(self._file(zone), z.to_text(relativize=True))
