"""What the providers whose machines a Terraform workspace makes (``aws``, ``terraform``) share: the
workspace's outputs say how to reach the hosts, which the bare-metal machinery then runs; Lifeboat's own
secrets, the lock and the Terraform state live in the target's 0700 state folder on this machine (a plan
needs them before any host exists).

A subclass sets ``state_root``, ``_outputs`` (None), ``_planned`` and ``_infra_done`` (False) and gives
``_specs(outputs)``, ``workspace()``, ``_destroy_infra()`` (``terraform destroy`` with what it needs) and
``infra_label`` (how the Terraform steps are named)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toolkit.contract import Resource, SecretValue
from toolkit.errors import ProviderError, ToolkitError
from toolkit.paths import private_dir, write_private
from toolkit.transport.hosts import HostSpec, SshDirectory


class TerraformHosts:
    # ------------------------------------------------------------------ hosts from the outputs
    def _directory(self) -> SshDirectory:
        return SshDirectory(self.specs, known_hosts=self.settings.get("known_hosts"),
                            ssh_config=self.settings.get("ssh_config"), base=self.stack.root,
                            connect_timeout=self.settings.get("connect_timeout") or 10, target=self.target.name)

    def outputs(self, *, fresh: bool = False) -> dict:
        if self._outputs is None or fresh:
            self._outputs = self.workspace().outputs() if (self.state_root / "terraform").is_dir() else {}
            self.specs = self._specs(self._outputs)
            self.directory = self._directory()
        return self._outputs

    def listen_address(self, spec: HostSpec) -> str:
        if not spec.address and not spec.private_address:
            self.outputs()
            spec = self.spec(spec.name)
        return spec.private_address or spec.address

    # ------------------------------------------------------------------ the state folder (0700)
    def _private_dir(self, path: Path) -> Path:
        private_dir(path)
        os.chmod(path, 0o700)
        return path

    def internal_secret(self, name: str, *, create: bool = True) -> SecretValue | None:
        """Lifeboat's own secrets for this target (database passwords, the release key), 0600 files."""
        path = self.state_root / "internal" / name
        try:
            return SecretValue(path.read_bytes())
        except FileNotFoundError:
            if not create:
                return None
        import secrets as pysecrets

        self._private_dir(self.state_root)
        self._private_dir(path.parent)
        value = pysecrets.token_urlsafe(32).encode()
        write_private(path, value)
        return SecretValue(value)

    def _file_lock(self):
        from toolkit.run.locks import FileLock

        return FileLock(self.state_root / "lock", self.label, self.stack.name)

    def lock(self, owner: str):
        self._private_dir(self.state_root)
        self._planned = self._infra_done = False  # each locked operation (up, destroy, migrate) starts afresh
        return self._file_lock().held(owner)

    def lock_status(self) -> dict | None:
        return self._file_lock().holder()

    def lock_release(self) -> None:
        self._file_lock().release()

    # ------------------------------------------------------------------ plan, apply and destroy
    def _planned_infra(self, summary) -> list[Resource]:
        """The saved plan's creations and changes as ``infra`` resources (deletions show as the absence of
        what is observed); from now on an apply applies that plan."""
        self._planned, self._infra_done = True, False
        out = []
        for change in summary.changes:
            if change.action in ("delete", "read"):
                continue
            attrs = {"changed": list(change.changed), "replace": change.action == "replace"} \
                if change.action in ("update", "replace") else {}
            out.append(Resource("infra", change.address, attrs))
        return out

    def _apply_infra(self, before, after) -> None:
        if self._infra_done:
            return
        self.events.step(f"terraform apply ({self.infra_label})")
        self.workspace().apply()
        self._infra_done = True
        self.outputs(fresh=True)

    def _delete_infra(self, resource) -> None:
        if self._infra_done:
            return
        if self._planned:  # part of an `up`: the saved plan holds the deletions
            return self._apply_infra(None, resource)
        self._clean_hosts()
        self._destroy_infra()
        self._infra_done = True
        self._outputs = {}

    def _clean_hosts(self) -> None:
        """Before the machines go: stop what Lifeboat runs there and remove its root (this matters where
        the hosts outlive the machines Terraform knows, and costs little otherwise)."""
        from toolkit.hostops.many import on_hosts

        self.outputs()

        def clean(name: str) -> None:
            self.runtime(name).stop()
            if self.runtime_kind == "docker":
                docker = self.docker(name)
                docker.remove_all()
                docker.remove_images(list(self.stack.services))
            self.conn(name).run(["rm", "-rf", self.root(name)])

        try:
            on_hosts([s.name for s in self.specs if s.address], clean, parallel=self.parallel)
        except ToolkitError as exc:
            self.events.warn(f"could not clean every host before destroying it: {exc.message}")

    def finish_destroy(self) -> None:
        if self.workspace().resources():
            raise ProviderError(f"{self.label}: Terraform still lists resources after destroy.",
                                code=f"{self.TYPE}.destroy_incomplete")
        shutil.rmtree(self.state_root, ignore_errors=True)
