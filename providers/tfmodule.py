"""``type: terraform``: your own Terraform module as a provider. The module makes the machines (on any cloud
Terraform reaches: Hetzner, DigitalOcean, OVH, ...); its outputs say how to reach them; Lifeboat then runs
the stack on them over SSH with the bare-metal machinery (PostgreSQL and Redis on the db host, media on the
storage host, processes or containers, the TLS proxy).

The contract (docs: README "Your own Terraform module"):

- the stack file names the hosts and their roles under the target (``hosts: [{name, roles}]``), so a plan
  can place the services before any machine exists;
- the module takes the variables given under ``variables:`` (strings), plus ``lifeboat_name`` (a prefix
  for what it names) and ``lifeboat_ssh_public_key`` (Lifeboat's login key, to authorise on the machines);
- it has an output ``lifeboat_hosts``: a map from host name to ``{address, port?, user?, private_address?,
  host_keys?, root?}``; ``host_keys`` (``"ssh-ed25519 AAAA..."``) pin the machines' keys, otherwise they
  must be in ``known_hosts``;
- with ``object_store: module``, an output ``lifeboat_object_store`` says where the stack's buckets live
  instead of the storage host: ``{type, ...}`` where type is ``s3``, ``azure-blob`` or ``gcs`` and the rest
  are that target type's settings (endpoint, account or project, and the *names* of the environment
  variables holding the credentials on the operator's machine, never the credentials). Lifeboat makes the
  buckets there and gives every app host the ``BUCKET_<NAME>_*`` variables to reach them
  (docs/app-contract.md);
- optionally an output ``lifeboat_dns``: the DNS service of the cloud, ``{type, ...}`` where type is
  ``digitalocean-dns``, ``hetzner-dns`` or ``rfc2136`` and the rest that type's settings (the token again
  only as an environment variable's name). A stack then names this target under ``dns: provider:`` and
  its records are kept at that service (the zone is the stack's ``dns: zone:``).

``up`` plans and applies the module (the saved plan is what applies), then configures the hosts;
``destroy`` cleans the hosts and destroys the module's resources.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from providers.common.hosts import HOST_FEATURES, HOST_SETTINGS, HostsProvider
from providers.common.terraform import TerraformHosts
from toolkit.config.schema import DictOf, Field, ListOf, Map, Scalar, Str
from toolkit.contract import ObjectStore, Provider, Resource, SecretStore, SecretValue
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable
from toolkit.paths import private_dir, write_private
from toolkit.transport.hosts import HOST, SSH_SETTINGS, HostSpec

MODULE_HOST = Map({
    "name": HOST.fields["name"],
    "roles": HOST.fields["roles"],
    "root": HOST.fields["root"],
})


class TerraformModuleProvider(TerraformHosts, HostsProvider):
    TYPE = "terraform"
    DESCRIPTION = "your own Terraform module makes the machines (any cloud); Lifeboat runs the stack on them over SSH"
    SERVICES = frozenset({"compute", "database", "cache", "objects", "secrets", "dns"})  # dns: where the module has a lifeboat_dns output
    FEATURES = {**HOST_FEATURES, "terraform": True}
    SETTINGS = {
        "module": Field(Str(expected="a directory holding the module's .tf files (relative to the stack file)"),
                        required=True),
        "variables": Field(DictOf(Scalar()), default=dict, doc="values for the module's variables (strings)"),
        "state_dir": Field(Str(expected="a directory for this target's state (relative to the stack file)"),
                           doc="default .lifeboat/<target>: Terraform state and Lifeboat's login key (0700)"),
        "hosts": Field(ListOf(MODULE_HOST, min_items=1), required=True,
                       doc="the machines the module makes: name and roles (addresses come from its outputs)"),
        "ssh_user": Field(Str(expected="the machines' login user"), default="root"),
        "object_store": Field(Str(choices=["storage-host", "module"]), default="storage-host",
                              doc="where the buckets live: files on the storage-role host, or the object store the "
                                  "module's lifeboat_object_store output names (s3, azure-blob, gcs)"),
        "key": Field(Str(expected="a private key file"),
                     doc="log in with this key (one the module authorises); default a key Lifeboat makes, "
                         "given to the module as lifeboat_ssh_public_key"),
        **{k: v for k, v in SSH_SETTINGS.items() if k != "hosts"},
        **{k: v for k, v in HOST_SETTINGS.items()
           if k in ("postgres_port", "redis_port", "media_port", "account", "app_account", "runtime",
                    "process_manager", "docker", "proxy")},
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        configured = self.settings.get("state_dir")
        self.state_root = ((stack.root / configured) if configured else stack.root / ".lifeboat" / target.name).resolve()
        self.module_dir = (stack.root / os.path.expanduser(self.settings["module"])).resolve()
        self.infra_label = self.module_dir.name
        self.prefix = re.sub(r"[^a-z0-9-]", "-", f"{stack.name}-{target.name}".lower())[:40].strip("-")
        self._outputs: dict | None = None
        self._store: Provider | None = None
        self._dns: Provider | None = None
        self._planned = False
        self._infra_done = False
        self.specs = self._specs({})
        self.directory = self._directory()

    # ------------------------------------------------------------------ hosts from the module's outputs
    def _specs(self, outputs: dict) -> list[HostSpec]:
        found_all = (outputs or {}).get("lifeboat_hosts") or {}
        own = self.settings.get("key")
        key = str((self.stack.root / os.path.expanduser(own)).resolve()) if own else \
            str(self.state_root / "ssh" / "id_ed25519")
        out = []
        for host in self.settings["hosts"]:
            found = found_all.get(host["name"]) or {}
            out.append(HostSpec(name=host["name"], address=str(found.get("address") or ""),
                                roles=tuple(host["roles"]),  # a root the stack file gives wins over the module's
                                root=host.get("root") or found.get("root") or self.settings.get("root") or "/srv/lifeboat",
                                port=int(found["port"]) if found.get("port") else None,
                                user=found.get("user") or self.settings.get("ssh_user") or "root", key=key,
                                private_address=found.get("private_address") or None,
                                host_keys=tuple(found.get("host_keys") or ())))
        return out

    def outputs(self, *, fresh: bool = False) -> dict:
        if self._outputs is None or fresh:
            self._store = self._dns = None  # made from the outputs about to be read
        return TerraformHosts.outputs(self, fresh=fresh)

    def conn(self, name: str):
        if not self.spec(name).address:
            self.outputs()
            if not self.spec(name).address:
                raise ProviderError(f"{self.label}: the module gives no address for host {name} (not applied yet, or "
                                    "no lifeboat_hosts output for it).",
                                    hint=f"run `lifeboat up --on {self.target.name}`.", code="terraform.no_host")
        return self.directory.connection(name)

    def scratch_settings(self, name: str) -> dict:
        """The module applied again for the copy, from a state folder of its own and under its own
        ``lifeboat_name`` (so on a cloud: machines, volumes and buckets of its own, destroyed with it), and on
        whatever hosts that gives, everything apart as on bare metal: each root suffixed ``-<name>``, every
        port moved up (a module that hands out the same hosts, as the tests' does, gets a copy beside the
        deployment)."""
        settings = HostsProvider.scratch_settings(self, name)
        return {**settings, "state_dir": f"{self.state_root}-{name}"}

    def media_on_hosts(self) -> bool:
        return bool(self.stack.buckets) and self.settings.get("object_store") != "module"

    def module_store(self) -> Provider:
        """The objects-only target the module's ``lifeboat_object_store`` output describes (validated like
        a target of that type in the stack file), under this target's name (so its default bucket prefix is
        ``<stack>-<target>-``)."""
        if self._store is None:
            found = self.outputs().get("lifeboat_object_store")
            if not found:
                raise ProviderError(f"{self.label}: object_store: module, but the module has no lifeboat_object_store "
                                    "output (or it is not applied yet).",
                                    hint=f"add the output to {self.module_dir}, then run `lifeboat up --on "
                                         f"{self.target.name}`.", code="terraform.no_object_store")
            self._store = target_from_output(self, "lifeboat_object_store", found, STORE_TYPES)
        return self._store

    def dns(self):
        """The DNS service the module's ``lifeboat_dns`` output describes."""
        if self._dns is None:
            found = self.outputs().get("lifeboat_dns")
            if not found:
                raise ProviderError(f"{self.label}: the module {self.module_dir} has no lifeboat_dns output (or it "
                                    "is not applied yet), so this target serves no DNS.",
                                    hint="add the output to the module and run `lifeboat up --on "
                                         f"{self.target.name}`, or name another target under dns: provider:.",
                                    code="terraform.no_dns")
            self._dns = target_from_output(self, "lifeboat_dns", found, DNS_TYPES)
        return self._dns.dns()

    def objects(self) -> ObjectStore:
        if self.media_on_hosts() or not self.stack.buckets:
            return HostsProvider.objects(self)
        return self.module_store().objects()

    def remote_bucket_env(self, *, create: bool = True) -> dict[str, str]:
        if self.media_on_hosts() or not self.stack.buckets:
            return HostsProvider.remote_bucket_env(self, create=create)
        if not create and not self.outputs().get("lifeboat_object_store"):
            return {}  # a plan before the module is applied: known once it is
        store = self.module_store()
        env: dict[str, str] = {}
        for bucket in sorted(self.stack.buckets):
            env.update(store.app_env(bucket))
        return env

    def _apply_bucket(self, before, after) -> None:
        if self.media_on_hosts():
            return HostsProvider._apply_bucket(self, before, after)
        store = self.module_store()
        store.objects().create_bucket(after.name)
        state = self.state()
        state.setdefault("buckets", {})[after.name] = {"store": store.TYPE}
        self.save_state(state)

    def _delete_bucket(self, resource) -> None:
        if self.media_on_hosts():
            return HostsProvider._delete_bucket(self, resource)
        if self.outputs().get("lifeboat_object_store"):
            self.module_store().objects().remove_bucket(resource.name)
        state = self.state()
        state.get("buckets", {}).pop(resource.name, None)
        self.save_state(state)

    # ------------------------------------------------------------------ Lifeboat's login key (0700 state)
    def login_key(self) -> str:
        from toolkit.transport.hosts import ed25519_pair

        if self.settings.get("key"):
            path = Path(self.spec(self.specs[0].name).key)
            public = path.with_suffix(".pub")
            return public.read_text().strip() if public.exists() else ""
        path = self.state_root / "ssh" / "id_ed25519"
        if not path.exists():
            private_dir(path.parent)
            os.chmod(self.state_root, 0o700)
            private, public = ed25519_pair(f"lifeboat@{self.prefix}")
            write_private(path, private)
            write_private(path.with_suffix(".pub"), public.encode())
        return path.with_suffix(".pub").read_text().strip()

    def secrets(self) -> SecretStore:
        return _SecretsOnHosts(self)

    # ------------------------------------------------------------------ Terraform
    def workspace(self):
        from toolkit.transport.terraform import Workspace

        private_dir(self.state_root)
        return Workspace(self.state_root / "terraform", self.module_dir, label=f"{self.label} terraform")

    def terraform_variables(self) -> dict:
        return {**dict(self.settings.get("variables") or {}), "lifeboat_name": self.prefix,
                "lifeboat_ssh_public_key": self.login_key()}

    def check(self) -> dict:
        if not self.module_dir.is_dir() or not list(self.module_dir.glob("*.tf")):
            raise BadInput(f"{self.label}: module: {self.settings['module']} is not a directory holding .tf files "
                           f"({self.module_dir}).", code="terraform.no_module")
        if shutil.which("terraform") is None:
            raise ProviderUnreachable(f"{self.label}: the terraform binary is not on PATH.",
                                      hint="install Terraform >= 1.5.", code="terraform.missing")
        for svc in self.stack.services.values():
            self.placement(svc)
        facts = {"module": str(self.module_dir), "state_dir": str(self.state_root)}
        if self.outputs():
            facts["hosts"] = HostsProvider.check(self).get("hosts")
            if not self.media_on_hosts() and self.stack.buckets:
                facts["object_store"] = {"type": self.module_store().TYPE, **self.module_store().check()}
        return facts

    def observe(self) -> list[Resource]:
        ws = self.workspace()
        out: list[Resource] = []
        if ws.initialised:
            out.extend(Resource("infra", r["address"], {}, {"id": r["id"]}) for r in ws.resources())
        if out:
            self.outputs()
            out.extend(HostsProvider.observe(self))
        return out

    def desired(self, resources, secrets=None):
        ws = self.workspace()
        ws.prepare({}, self.terraform_variables())
        out = self._planned_infra(ws.plan())
        out.extend(HostsProvider.desired(self, resources, secrets))
        return out

    def hosts_made(self) -> bool:
        return bool(self.primary_spec().address or (self.outputs().get("lifeboat_hosts") or {}))

    def make_hosts(self) -> None:
        """Apply the module now (a plan first unless this run planned it): what needs a host before the
        plan's infrastructure step comes (a migration copies secrets before it prepares the target)."""
        if not self._planned:
            ws = self.workspace()
            ws.prepare({}, self.terraform_variables())
            ws.plan()
            self._planned = True
        self._apply_infra(None, None)

    def free_space(self) -> list[dict]:
        return HostsProvider.free_space(self) if self.hosts_made() else []  # unknown until they exist

    def _destroy_infra(self) -> None:
        ws = self.workspace()
        ws.prepare({}, self.terraform_variables())
        self.events.step(f"terraform destroy ({self.infra_label})")
        ws.destroy()


STORE_TYPES = ("s3", "azure-blob", "gcs")
DNS_TYPES = ("digitalocean-dns", "hetzner-dns", "rfc2136")
OUTPUT_TYPES = {"lifeboat_object_store": STORE_TYPES, "lifeboat_dns": DNS_TYPES}


def target_from_output(provider: TerraformModuleProvider, output: str, found, types: tuple[str, ...]) -> Provider:
    """A one-service target (an object store, a DNS service) made from one of the module's outputs; its
    keys are checked like that type's settings in a stack file, and a problem names the module and the key."""
    from toolkit.config.model import Target
    from toolkit.config.schema import Map, Report, Where
    from toolkit.contract import registry

    where = f"{provider.module_dir} (output {output})"
    code = f"terraform.bad_{output.removeprefix('lifeboat_')}"
    kind = found.get("type") if isinstance(found, dict) else None
    if kind not in types:
        raise BadInput(f"{where}: type: expected one of {', '.join(types)}, got {kind!r}.", code=code)
    report = Report(where)
    settings = Map({"type": Field(Str(), required=True), **registry.settings_spec(kind)},
                   expected=f"the settings of a {kind} target").check(found, Where(output, None), report)
    check = registry.settings_check(kind)
    if check is not None and not report.problems:
        check(settings, Where(output, None), report, found)
    if report.problems:
        raise BadInput(" ".join(p.message for p in report.problems), hint=report.problems[0].hint, code=code)
    settings = {k: v for k, v in settings.items() if k != "type" and v is not None}
    made = registry.load(kind)(provider.stack, Target(provider.target.name, kind, settings))
    made.events = provider.events
    return made


def module_contract(module: Path) -> list[str]:
    """What a module lacks of the contract, read from its .tf files (variables and outputs by name)."""
    text = "\n".join(p.read_text() for p in sorted(module.glob("*.tf")))
    problems = []
    for variable in ("lifeboat_name", "lifeboat_ssh_public_key"):
        if not re.search(rf'variable\s+"{variable}"', text):
            problems.append(f'variable "{variable}" is not declared')
    found = re.search(r'output\s+"lifeboat_hosts"\s*\{(.*?)\n\}', text, re.S)
    if not found:
        problems.append('output "lifeboat_hosts" is missing')
    elif not re.search(r"\baddress\s*=", found.group(1)):
        problems.append('output "lifeboat_hosts" gives no address for the hosts')
    for output, types in OUTPUT_TYPES.items():
        found = re.search(rf'output\s+"{output}"\s*\{{(.*?)\n\}}', text, re.S)
        if found and "jsondecode" not in found.group(1):  # a literal object: its type and keys are checked
            from toolkit.contract import registry

            kind = re.search(r'\btype\s*=\s*"([^"]*)"', found.group(1))
            if not kind or kind.group(1) not in types:
                problems.append(f'output "{output}" needs type = one of {", ".join(types)}')
                continue
            allowed = set(registry.settings_spec(kind.group(1))) | {"type"}
            body = found.group(1).split("{", 1)[1] if "{" in found.group(1) else ""
            for key in re.findall(r"^\s*(\w+)\s*=", body, re.M):
                if key not in allowed:
                    problems.append(f'output "{output}": "{key}" is not a setting of a {kind.group(1)} target')
    return problems


class _SecretsOnHosts(SecretStore):
    """The bare-metal secret store on the primary host, once the module has made it: before that it holds
    nothing, and the first write applies the module first (secrets come before infrastructure in a plan
    and a migration, and here they live on what the infrastructure makes)."""

    def __init__(self, provider: TerraformModuleProvider):
        self.p = provider

    def _store(self, *, writing: bool):
        if not self.p.hosts_made():
            if not writing:
                return None
            self.p.make_hosts()
        return HostsProvider.secrets(self.p)

    def names(self) -> list[str]:
        store = self._store(writing=False)
        return store.names() if store else []

    def read(self, name: str) -> SecretValue | None:
        store = self._store(writing=False)
        return store.read(name) if store else None

    def write(self, name: str, value: SecretValue) -> None:
        self._store(writing=True).write(name, value)

    def delete(self, name: str) -> None:
        store = self._store(writing=False)
        if store:
            store.delete(name)
