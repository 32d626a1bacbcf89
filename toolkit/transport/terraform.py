"""Terraform, driven through python-terraform, in one place.

python-terraform 0.10.1 is old: its ``destroy()`` passes ``-force``, which current Terraform rejects, and
``plan`` exits 2 when there are changes (that is not an error). Everything Lifeboat asks of Terraform goes
through :class:`Workspace`, which papers over both and is tested against the real binary.

A workspace is a directory Lifeboat owns (0700): the module's ``.tf`` files copied from ``templates/``,
a generated ``lifeboat.tf.json`` (provider and backend blocks), ``terraform.tfvars.json`` (plain
variables, 0600) and Terraform's own state. Sensitive variables go in a 0600 var file that exists only
while a command runs: never in argv, never in a log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.contract import SecretValue
from toolkit.errors import ProviderError, ProviderUnreachable, tail
from toolkit.paths import private_dir, write_private

PLAN_FILE = "lifeboat.tfplan"


@dataclass(frozen=True)
class ResourceChange:
    address: str
    type: str
    action: str  # create | update | replace | delete | noop | read
    changed: tuple[str, ...] = ()  # attribute names that change (update/replace)


@dataclass
class PlanSummary:
    changes: list[ResourceChange] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def has_changes(self) -> bool:
        return any(c.action in ("create", "update", "replace", "delete") for c in self.changes)

    def as_dict(self) -> dict:
        return {"add": self.count("create") + self.count("replace"),
                "change": self.count("update"),
                "destroy": self.count("delete") + self.count("replace"),
                "resources": [{"address": c.address, "action": c.action, "changed": list(c.changed)}
                              for c in self.changes if c.action != "read"]}


def _action(actions: list[str]) -> str:
    if actions == ["no-op"]:
        return "noop"
    if actions == ["create"]:
        return "create"
    if actions == ["update"]:
        return "update"
    if actions == ["delete"]:
        return "delete"
    if sorted(actions) == ["create", "delete"]:
        return "replace"
    if actions == ["read"]:
        return "read"
    return "+".join(actions)


def summarise(plan_json: dict) -> PlanSummary:
    """Per-resource actions from ``terraform show -json PLANFILE``."""
    out = []
    for rc in plan_json.get("resource_changes", []):
        change = rc.get("change", {})
        action = _action(change.get("actions", []))
        changed: tuple[str, ...] = ()
        if action in ("update", "replace"):
            before, after = change.get("before") or {}, change.get("after") or {}
            unknown = change.get("after_unknown") or {}
            changed = tuple(sorted(k for k in set(before) | set(after)
                                   if before.get(k) != after.get(k) and not (unknown.get(k) and k not in before)))
            changed = changed or tuple(sorted(k for k, v in unknown.items() if v))
        out.append(ResourceChange(rc["address"], rc.get("type", ""), action, changed))
    return PlanSummary(out)


class Workspace:
    """One Terraform root module with its state, for one stack on one target."""

    def __init__(self, directory: Path, module: Path, *, env: dict[str, str] | None = None, label: str = "terraform"):
        self.dir = directory
        self.module = module
        self.env = dict(env or {})
        self.label = label

    # ------------------------------------------------------------------ set-up
    def _tf(self):
        with warnings.catch_warnings():  # python-terraform calls the deprecated log.warn
            warnings.simplefilter("ignore", DeprecationWarning)
            from python_terraform import Terraform

        # python-terraform logs every command and Terraform's stderr itself; Lifeboat reports failures through
        # TerraformFailed, once, so its logger stays quiet.
        logging.getLogger("python_terraform").disabled = True
        binary = shutil.which("terraform")
        if not binary:
            raise ProviderUnreachable(f"{self.label}: the terraform binary is not on PATH.",
                                      hint="install Terraform >= 1.5 (https://developer.hashicorp.com/terraform).",
                                      code="terraform.missing")
        return Terraform(working_dir=str(self.dir), terraform_bin_path=binary, is_env_vars_included=True)

    def prepare(self, root: dict, variables: dict) -> None:
        """Write the module files, the generated root blocks and the plain variables; init when needed."""
        private_dir(self.dir)
        os.chmod(self.dir, 0o700)
        for old in [*self.dir.glob("*.tf"), self.dir / PLAN_FILE]:
            old.unlink(missing_ok=True)  # module files are copied afresh; a plan is only applied by its own run
        for src in sorted(self.module.glob("*.tf")):
            write_private(self.dir / src.name, src.read_text())
        write_private(self.dir / "lifeboat.tf.json", json.dumps(root, indent=1, sort_keys=True))
        write_private(self.dir / "terraform.tfvars.json", json.dumps(variables, indent=1, sort_keys=True))
        stamp = hashlib.sha256(json.dumps(root, sort_keys=True).encode()
                               + b"".join(p.read_bytes() for p in sorted(self.module.glob("*.tf")))).hexdigest()
        stamp_file = self.dir / ".lifeboat-init"
        if not stamp_file.exists() or stamp_file.read_text() != stamp:
            self._run("init", input=False, no_color=_FLAG, reconfigure=_FLAG)
            write_private(stamp_file, stamp)

    # ------------------------------------------------------------------ commands
    def plan(self, secrets: dict | None = None, *, destroy: bool = False) -> PlanSummary:
        """Compute a plan, keep it as a plan file for ``apply``, and summarise it. Changes nothing remote."""
        with self._secret_vars(secrets) as var_file:
            opts = {"input": False, "no_color": _FLAG, "detailed_exitcode": _FLAG, "out": PLAN_FILE}
            if var_file:
                opts["var_file"] = var_file
            if destroy:
                opts["destroy"] = _FLAG
            self._run("plan", ok=(0, 2), **opts)
        return summarise(self.show(PLAN_FILE))

    def apply(self) -> None:
        """Apply the plan file the last ``plan`` wrote (so what runs is what was shown)."""
        if not (self.dir / PLAN_FILE).exists():
            raise ProviderError(f"{self.label}: no saved plan to apply.", code="terraform.no_plan")
        try:
            self._run("apply", PLAN_FILE, input=False, no_color=_FLAG, auto_approve=_FLAG)
        finally:
            (self.dir / PLAN_FILE).unlink(missing_ok=True)

    def destroy(self, secrets: dict | None = None) -> None:
        # python-terraform's destroy() adds -force, removed in Terraform 0.15: go through cmd() instead.
        with self._secret_vars(secrets) as var_file:
            opts = {"input": False, "no_color": _FLAG, "auto_approve": _FLAG}
            if var_file:
                opts["var_file"] = var_file
            self._run("destroy", **opts)

    def show(self, planfile: str | None = None) -> dict:
        args = [planfile] if planfile else []
        out = self._run("show", *args, json=_FLAG, no_color=_FLAG)
        return json.loads(out) if out.strip() else {}

    @property
    def initialised(self) -> bool:
        return (self.dir / ".lifeboat-init").exists()

    def outputs(self) -> dict:
        if not self.initialised:
            return {}
        out = self._run("output", json=_FLAG, no_color=_FLAG)
        return {k: v.get("value") for k, v in (json.loads(out) if out.strip() else {}).items()}

    def resources(self) -> list[dict]:
        """Managed resources in the state: address, type and provider id."""
        if not self.initialised:
            return []
        state = self.show()
        found: list[dict] = []

        def walk(module: dict) -> None:
            for res in module.get("resources", []):
                if res.get("mode") == "managed":
                    found.append({"address": res["address"], "type": res["type"],
                                  "id": (res.get("values") or {}).get("id")})
            for child in module.get("child_modules", []):
                walk(child)

        walk((state.get("values") or {}).get("root_module") or {})
        return found

    def forget(self) -> None:
        """Remove the workspace (after a destroy left nothing behind)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _secret_vars(self, secrets: dict | None) -> Iterator[str | None]:
        if not secrets:
            yield None
            return
        path = self.dir / "lifeboat-secrets.tfvars.json"
        write_private(path, json.dumps({k: _reveal(v) for k, v in secrets.items()}))
        try:
            yield path.name
        finally:
            path.unlink(missing_ok=True)

    def _run(self, command: str, *args: str, ok: tuple[int, ...] = (0,), **options) -> str:
        tf = self._tf()
        from python_terraform import IsFlagged

        options = {k: IsFlagged if v is _FLAG else v for k, v in options.items()}
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # python-terraform passes os.environ to terraform
        umask = os.umask(0o077)  # Terraform's state, plan and lock files: owner only
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                code, out, err = tf.cmd(command, *args, capture_output=True, **options)
        finally:
            os.umask(umask)
            for path in self.dir.iterdir():  # Terraform writes a few files (its lock file) 0644 regardless
                if path.is_file():
                    path.chmod(0o600)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if code not in ok:
            raise TerraformFailed(self.label, command, code, err or out)
        return out or ""


class TerraformFailed(ProviderError):
    code = "terraform.failed"

    def __init__(self, label: str, command: str, exit_code: int, output: str):
        self.command = command
        self.exit_code_tf = exit_code
        self.output = tail(output, lines=25, limit=4000)
        super().__init__(f"{label}: `terraform {command}` failed (exit {exit_code}):\n{self.output}",
                         hint="the Terraform working directory keeps its state; fix the cause and re-run.")


class _Flag:
    """Stands for python-terraform's IsFlagged (a bare ``-option``) without importing it at start-up."""


_FLAG = _Flag()


def _reveal(value):
    if isinstance(value, SecretValue):
        return value.reveal_text()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    return value
