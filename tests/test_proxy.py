"""The Caddyfile is built as data: exact text for ACME and for a given certificate."""

from toolkit.commands.proxy import ProxyConfig, ProxySite, caddy_argv, caddyfile


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
\t\thealth_headers {
\t\t\tHost "social.example.com"
\t\t\tX-Forwarded-Proto "https"
\t\t}
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


def test_routes_longest_prefix_first():
    from toolkit.commands.proxy import ProxyRoute

    text = caddyfile(ProxyConfig(bind="h", http_port=80, https_port=443, storage="/s", sites=(
        ProxySite("x.example.com", ("h:3000",), "/health", routes=(
            ProxyRoute("/api", ("h:5000",)), ProxyRoute("/api/v1/streaming", ("h:4000", "h:4001"), "/health"))),),
        acme_email="a@example.com"))
    body = text.split("x.example.com {", 1)[1]
    assert body.index('handle "/api/v1/streaming*"') < body.index('handle "/api*"') < body.index("\thandle {")
    assert '\t\treverse_proxy "h:4000" "h:4001" {' in body


def test_served_paths_refuse_writes_and_never_list_a_bucket():
    """A folder is served by file_server; a bucket through the gateway with its token, the prefix stripped,
    the query dropped, "/" (a listing of the bucket) answered 404; both GET and HEAD only, in written order."""
    from toolkit.commands.proxy import ProxyRoute, ProxyServe

    text = caddyfile(ProxyConfig(bind="h", http_port=80, https_port=443, storage="/s", sites=(
        ProxySite("x.example.com", ("h:3000",), routes=(ProxyRoute("/api/", ("h:5000",)),), served=(
            ProxyServe("/static/", root="/srv/r/releases/web/abc/static"),
            ProxyServe("/media/", gateway="10.0.0.2:8790", bucket="media", token="t0k\"en"))),),
        acme_email="a@example.com"))
    body = text.split("x.example.com {", 1)[1]
    assert body.index('handle_path "/static/*"') < body.index('handle "/media/*"') < body.index("\thandle {")
    static = body.split('handle_path "/static/*" {', 1)[1].split("\n\t}", 1)[0]
    assert static.split() == ["route", "{", "@write", "not", "method", "GET", "HEAD", "respond", "@write", "405",
                              "root", "*", '"/srv/r/releases/web/abc/static"', "file_server", "}"], static
    media = body.split('handle "/media/*" {', 1)[1].split("\n\t}", 1)[0]
    assert media.index("respond @write 405") < media.index('respond "/media/" 404') < media.index("reverse_proxy")
    assert "rewrite" not in media  # the path goes as the client encoded it (? and # in keys)
    assert 'reverse_proxy "10.0.0.2:8790" {' in media and 'header_up Authorization "Bearer t0k\\"en"' in media
    assert 'header_up X-Lifeboat-Serve "/media/ media/"' in media
    keyed = caddyfile(ProxyConfig(bind="h", http_port=80, https_port=443, storage="/s", sites=(
        ProxySite("x.example.com", ("h:3000",), served=(
            ProxyServe("/attachments/", gateway="g:1", bucket="media/attachments", token="t"),)),)))
    assert 'header_up X-Lifeboat-Serve "/attachments/ media/attachments/"' in keyed  # the key attachments/x


def test_real_caddy_accepts_the_configs(tmp_path):
    """Caddy itself parses every shape we generate (`caddy adapt`, no network, nothing started)."""
    import json
    import subprocess

    from toolkit.commands.proxy import ProxyRoute, ProxyServe

    from .conftest import require

    caddy = require("caddy", "apt-get install caddy")
    site = ProxySite("social.example.com", ("10.0.0.5:3000", "10.0.0.5:3001"), "/health",
                     routes=(ProxyRoute("/api/v1/streaming", ("10.0.0.5:4000",), "/api/v1/streaming/health"),))
    configs = {
        "acme": ProxyConfig(bind="10.0.0.5", http_port=80, https_port=443, storage=str(tmp_path / "a b"),
                            sites=(site,), acme_email="ops@example.com", acme_ca="https://127.0.0.1:14000/dir",
                            acme_ca_root=str(tmp_path / "ca.pem")),
        "certificate": ProxyConfig(bind="10.0.0.5", http_port=8080, https_port=8443, storage=str(tmp_path / "s"),
                                   sites=(ProxySite("x.example.com", ("10.0.0.5:3000",)),),
                                   certificate=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem")),
        "served": ProxyConfig(bind="10.0.0.5", http_port=80, https_port=443, storage=str(tmp_path / "s"),
                              sites=(ProxySite("x.example.com", ("10.0.0.5:3000",), "/health", served=(
                                  ProxyServe("/static/", root=str(tmp_path / "rel" / "static")),
                                  ProxyServe("/media/", gateway="10.0.0.6:8790", bucket="media", token="tok"))),),
                              acme_email="ops@example.com"),
    }
    for name, config in configs.items():
        path = tmp_path / f"{name}.Caddyfile"
        path.write_text(caddyfile(config))
        out = subprocess.run([caddy, "adapt", "--config", str(path), "--adapter", "caddyfile"], capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        adapted = json.loads(out.stdout)
        assert adapted["apps"]["http"]["servers"], name
