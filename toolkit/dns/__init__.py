"""DNS services (the DnsService contract): zone files, RFC 2136 with TSIG, Route53, DigitalOcean, Hetzner.
The providers that offer DNS compose one of these."""
