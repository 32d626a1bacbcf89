"""The TLS reverse proxy (Caddy) on every web host, ACME certificates checked before traffic moves.
A part of :class:`providers.common.hosts.HostsProvider`."""

from __future__ import annotations

import hashlib
import time

from toolkit.commands.proxy import ProxyConfig, ProxyRoute, ProxyServe, ProxySite, caddy_argv, caddyfile
from toolkit.contract import (
    SecretValue,
)
from toolkit.errors import BadInput, ProviderError
from toolkit.hostops.many import on_hosts
from toolkit.hostops.shell import sh
from toolkit.transport.hosts import HostSpec


class TlsProxy:
    # ------------------------------------------------------------------ the TLS reverse proxy
    def proxy_settings(self) -> dict:
        settings = dict(self.settings.get("proxy") or {})
        settings.setdefault("http_port", 80)
        settings.setdefault("https_port", 443)
        return settings

    def _served(self, spec: HostSpec, reveal: bool) -> tuple[ProxyServe, ...]:
        """The paths the web services' ``serve:`` names, as the proxy on ``spec`` answers them: a release
        folder of this host (the release being deployed), a bucket's folder on the storage host, or the
        media gateway there from any other web host. ``reveal``: the gateway's token itself (written to the
        0600 Caddyfile), else a stand-in (what the plan compares: the token is made by the first up)."""
        out = []
        storage = self.hosts_with("storage")
        for svc in self.stack.web_services():
            for prefix, kind, what in svc.serve:
                if kind == "release":
                    out.append(ProxyServe(prefix, root=f"{spec.root}/releases/{svc.name}/{self.release_of(svc)}/{what}"))
                elif not self.media_on_hosts() or not storage:
                    continue  # buckets that are not files on a host: the app's bucket URL serves them (warned)
                elif storage[0].name == spec.name:  # keys are paths (a key prefix is a folder)
                    out.append(ProxyServe(prefix, root=f"{spec.root}/objects/{what}".rstrip("/")))
                else:
                    token = self.internal_secret("media_token", create=True).reveal_text() if reveal else "<token>"
                    out.append(ProxyServe(prefix, gateway=f"{self.listen_address(storage[0])}:{self.media_port}",
                                          bucket=what.rstrip("/"), token=token))
        return tuple(out)

    def _proxy_config(self, spec: HostSpec, *, reveal: bool = False) -> ProxyConfig:
        settings = self.proxy_settings()
        base = f"{spec.root}/proxy"
        tls = self.stack.tls
        address = self.listen_address(spec)
        sites = []
        web = self.stack.web_services()
        main = [s for s in web if not s.path]
        if web:
            svc = main[0] if main else web[0]  # the first web service without a path serves the rest

            def ups(service) -> tuple[str, ...]:
                # each host's proxy sends to its own replicas; a singleton's run on one host only
                at = self.listen_address(self.spec(self.placement(service)[0])) if service.singleton else address
                return tuple(f"{at}:{self.app_port(service, i)}" for i in range(service.replicas))

            routes = tuple(ProxyRoute(s.path, ups(s), s.health) for s in web if s.path and s is not svc)
            sites.append(ProxySite(self.stack.domain, ups(svc), svc.health, routes, self._served(spec, reveal)))
        return ProxyConfig(
            bind=address, http_port=settings["http_port"], https_port=settings["https_port"],
            storage=f"{base}/data", sites=tuple(sites), acme_email=tls.acme_email,
            acme_ca=settings.get("acme_ca"),
            acme_ca_root=f"{base}/acme-ca-root.pem" if settings.get("acme_ca_root") else None,
            certificate=f"{base}/tls/cert.pem" if tls.certificate_secret else None,
            key=f"{base}/tls/key.pem" if tls.certificate_secret else None)

    def proxy_id(self, secrets: dict[str, SecretValue] | None = None) -> str:
        digest = hashlib.sha256()
        for spec in self.hosts_with("web"):
            digest.update(caddyfile(self._proxy_config(spec)).encode())
        settings = self.proxy_settings()
        if settings.get("acme_ca_root"):
            digest.update((self.stack.root / settings["acme_ca_root"]).read_bytes())
        tls = self.stack.tls
        if tls and tls.certificate_secret:
            store = self.secrets()
            for name in (tls.certificate_secret, tls.key_secret):
                value = (secrets or {}).get(name) or store.read(name)
                digest.update(hashlib.sha256(value.reveal() if value else b"").digest())
        return digest.hexdigest()[:16]

    def _apply_proxy(self, before, after) -> None:
        hosts = [s.name for s in self.hosts_with("web")]
        tls = self.stack.tls
        settings = self.proxy_settings()
        config_id = after.attrs["config"]

        def program(host: str) -> dict:
            spec = self.spec(host)
            conn = self.conn(host)
            base = f"{spec.root}/proxy"
            sh(conn, 'mkdir -p "$1/data" "$1/tls" && chmod 700 "$1"', base)
            config = self._proxy_config(spec, reveal=True)
            conn.write_bytes(f"{base}/Caddyfile", caddyfile(config).encode(), mode=0o600)
            if settings.get("acme_ca_root"):
                conn.write_bytes(config.acme_ca_root, (self.stack.root / settings["acme_ca_root"]).read_bytes(),
                                 mode=0o644)
            if tls.certificate_secret:
                store = self.secrets()
                for name, path in ((tls.certificate_secret, config.certificate), (tls.key_secret, config.key)):
                    value = store.read(name)
                    if value is None:
                        raise BadInput(f"secret {name} (tls) is not in the secret store of {self.label}.",
                                       code="secret.missing")
                    conn.write_bytes(path, value.reveal(), mode=0o600)
            runtime = self.runtime(host)
            runtime.prepare()
            env = {"HOME": base, "XDG_DATA_HOME": f"{base}/data", "XDG_CONFIG_HOME": f"{base}/config",
                   "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
            return {"name": "proxy.0", "argv": caddy_argv(f"{base}/Caddyfile"), "cwd": base, "host": host,
                    "env_file": runtime.write_env("proxy.0", env), "generation": config_id,
                    "log": f"{runtime.dir}/logs/proxy.0.log"}

        for host in hosts:
            if self.conn(host).run(["caddy", "version"], check=False).exit_code != 0:
                raise ProviderError(f"{host}: caddy is not installed (the TLS proxy).",
                                    hint="install it on the web hosts (Debian: apt-get install caddy).",
                                    code="host.missing_caddy")
        programs = on_hosts(hosts, program, parallel=self.parallel)
        state = self.state()
        state["proxy"] = {"config": config_id, "hosts": hosts, "confirmed": False,
                          "programs": [programs[h] for h in hosts]}
        self.save_state(state)

        def start(host: str) -> None:
            self.runtime(host).apply(self._host_programs(host, state))
            self._wait_proxy(host, config_id)

        # With ACME, the first web host obtains the certificate; the others get a copy of it in their
        # Caddy storage (as a cluster with shared storage would), so only one host answers the challenge.
        first, rest = hosts[0], hosts[1:]
        start(first)
        if rest and not tls.certificate_secret:
            files = self._certificate_files(first)
            for host in rest:
                conn = self.conn(host)
                base = f"{self.root(host)}/proxy/data"
                for relative, body in files.items():
                    sh(conn, 'mkdir -p "$(dirname "$1")"', f"{base}/{relative}")
                    conn.write_bytes(f"{base}/{relative}", body, mode=0o600)
        if rest:
            on_hosts(rest, start, parallel=self.parallel)
        self._confirm("proxy")

    def _certificate_files(self, host: str, timeout: float = 90.0) -> dict[str, bytes]:
        """The certificate, key and metadata Caddy stored for the domain on ``host`` (waits for them)."""
        conn = self.conn(host)
        base = f"{self.root(host)}/proxy/data"
        deadline = time.time() + timeout
        while time.time() < deadline:
            listing = sh(conn, 'cd "$1" 2>/dev/null && find certificates -type f -path "*/$2/*" || true', base,
                         self.stack.domain).text.split("\n")
            names = [n for n in listing if n.strip()]
            if any(n.endswith(".crt") for n in names) and any(n.endswith(".key") for n in names):
                return {n: conn.read_bytes(f"{base}/{n}") or b"" for n in names}
            time.sleep(0.5)
        log = self.runtime(host).log_tail("proxy.0")
        raise ProviderError(f"{host}: no certificate for {self.stack.domain} from the ACME server within "
                            f"{timeout:.0f} s. Caddy's log ends with:\n{log}", code="host.acme")

    def _wait_proxy(self, host: str, config_id: str, timeout: float = 90.0) -> None:
        runtime = self.runtime(host)
        address = self.listen_address(self.spec(host))
        port = self.proxy_settings()["https_port"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = runtime.status().get("proxy.0", {})
            if status.get("generation") == config_id and status.get("state") == "crashed":
                break
            if status.get("generation") == config_id and status.get("state") == "running" and \
                    runtime.https_ok(address, port, self.stack.domain):
                return
            time.sleep(0.5)
        raise ProviderError(f"{host}: the TLS proxy did not serve https://{self.stack.domain} on {address}:{port} "
                            f"(waited up to {timeout:.0f} s). Its log ends with:\n{runtime.log_tail('proxy.0')}",
                            code="host.proxy")

    def _delete_proxy(self, resource) -> None:
        state = self.state()
        proxy = state.pop("proxy", None)
        self.save_state(state)

        on_hosts((proxy or {}).get("hosts", []), lambda host: self._retire(host, state, "proxy.0", "proxy"),
                 parallel=self.parallel)
