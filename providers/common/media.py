"""The media gateway: on the storage host, an HTTP server (toolkit/agents/mediaserver.py) through which the
app hosts that are not the storage host reach the buckets. A part of
:class:`providers.common.hosts.HostsProvider`."""

from __future__ import annotations

import hashlib
import json
import time

from toolkit.agents.mediaserver import program as mediaserver_program
from toolkit.errors import ProviderError
from toolkit.hostops.shell import sh


class MediaGateway:
    @property
    def media_port(self) -> int:
        return int(self.settings.get("media_port") or 8790)

    @property
    def media_mode(self) -> int:
        return int(str(self.settings.get("media_mode") or "0644"), 8)

    def gateway_needed(self) -> bool:
        """Whether apps run on a host other than the storage host (they then reach the buckets through the
        media gateway there, toolkit/agents/mediaserver.py)."""
        storage = self.hosts_with("storage")
        if not self.media_on_hosts() or not storage:
            return False
        if self.settings.get("media_gateway"):
            return True
        return any(h != storage[0].name for svc in self.stack.services.values() for h in self.placement(svc))

    def gateway_id(self) -> str:
        spec = self.first("storage", "an object store")
        digest = hashlib.sha256(mediaserver_program().encode())
        digest.update(json.dumps([spec.name, self.listen_address(spec), self.media_port, self.runtime_kind]).encode())
        return digest.hexdigest()[:16]

    def _apply_media(self, before, after) -> None:
        host = after.attrs["host"]
        spec, conn = self.spec(host), self.conn(host)
        account = self.app_account(host) if self.runtime_kind == "process" else None
        base = f"{spec.root}/media"
        sh(conn, 'mkdir -p "$1" && chmod 755 "$1"', base)
        conn.write_bytes(f"{base}/mediaserver.py", mediaserver_program().encode(), mode=0o644)
        conn.write_bytes(f"{base}/token", self.internal_secret("media_token").reveal(), mode=0o600)
        access, secret = self.s3_keys()
        conn.write_bytes(f"{base}/s3keys.json", json.dumps({access: secret}).encode(), mode=0o600)
        if account:
            conn.run(["chown", f"{account}:{account}", f"{base}/token", f"{base}/s3keys.json"])
        runtime = self.runtime(host)
        runtime.prepare()
        address, config = self.listen_address(spec), after.attrs["config"]
        program = {"name": "media.0", "host": host, "cwd": base, "generation": config, "user": account,
                   "argv": ["python3", f"{base}/mediaserver.py", "--bind", address, "--port", str(self.media_port),
                            "--root", f"{spec.root}/objects", "--token-file", f"{base}/token",
                            "--mode", oct(self.media_mode), "--s3-keys", f"{base}/s3keys.json"],
                   "env_file": runtime.write_env("media.0", {"PATH": "/usr/local/bin:/usr/bin:/bin"}),
                   "log": f"{runtime.dir}/logs/media.0.log"}
        state = self.state()
        state["media"] = {"config": config, "host": host, "confirmed": False, "programs": [program]}
        self.save_state(state)
        runtime.apply(self._host_programs(host, state))
        url = f"http://{address}:{self.media_port}/healthz"
        deadline = time.time() + 60
        while time.time() < deadline:
            status = runtime.status().get("media.0", {})
            if status.get("generation") == config and status.get("state") == "running" and runtime.http_ok(url):
                return self._confirm("media")
            if status.get("generation") == config and status.get("state") == "crashed":
                break
            time.sleep(0.3)
        raise ProviderError(f"{host}: the media gateway did not answer on {address}:{self.media_port}. Its log ends "
                            f"with:\n{runtime.log_tail('media.0')}", hint="is the port free on that host? "
                            "(setting media_port)", code="host.media_gateway")

    def _delete_media(self, resource) -> None:
        state = self.state()
        media = state.pop("media", None)
        self.save_state(state)
        if not media:
            return
        self._retire(media["host"], state, "media.0", "media")
