"""The Caddyfile is built as data: exact text for ACME and for a given certificate."""

from toolkit.proxy import ProxyConfig, ProxySite, caddy_argv, caddyfile


def test_acme_caddyfile():
    text = caddyfile(ProxyConfig(bind="10.0.0.5", http_port=80, https_port=443, storage="/srv/lb/proxy/data",
                                 sites=(ProxySite("social.example.com", ("10.0.0.5:3000", "10.0.0.5:3001"),
                                                  "/health"),),
                                 acme_email="ops@example.com", acme_ca="https://acme.test/dir",
                                 acme_ca_root="/srv/lb/proxy/ca.pem"))
    assert text == """# Written by Lifeboat; changes are overwritten on the next `lifeboat up`.
{
\tadmin off
\tdefault_bind "10.0.0.5"
\thttp_port 80
\thttps_port 443
\tstorage file_system "/srv/lb/proxy/data"
\tskip_install_trust
\tocsp_stapling off
\temail "ops@example.com"
\tacme_ca "https://acme.test/dir"
\tacme_ca_root "/srv/lb/proxy/ca.pem"
}
social.example.com {
\treverse_proxy "10.0.0.5:3000" "10.0.0.5:3001" {
\t\tlb_policy round_robin
\t\tlb_try_duration 10s
\t\tfail_duration 5s
\t\thealth_uri "/health"
\t\thealth_interval 2s
\t}
}
"""


def test_certificate_caddyfile_quotes_paths():
    text = caddyfile(ProxyConfig(bind="h", http_port=8080, https_port=8443, storage='/a "b"', sites=(
        ProxySite("x.example.com", ("h:1",)),), certificate="/p/cert.pem", key="/p/key.pem",
        acme_email="ignored@example.com"))
    assert 'storage file_system "/a \\"b\\""' in text
    assert '\ttls "/p/cert.pem" "/p/key.pem"' in text
    assert "email" not in text and "health_uri" not in text
    assert caddy_argv("/c") == ["caddy", "run", "--config", "/c", "--adapter", "caddyfile"]
