"""The ``aws`` provider: the stack on Terraform-made EC2 instances (the host machinery of
:mod:`providers.common.hosts`, over SSH), with S3, Route53, RDS and Secrets Manager (see the package's
docstring)."""

from __future__ import annotations

import json
import os
import re
import shutil

from providers.aws.api import ENDPOINTS, AwsApi
from providers.aws.rds import RDS_ADMIN, RdsDatabase
from providers.aws.secretsmanager import SecretsManagerStore
from providers.common.hosts import HOST_FEATURES, HOST_SETTINGS, HostsProvider
from providers.common.hostservices import HostCompute
from providers.common.terraform import TerraformHosts
from toolkit.config.schema import DictOf, Field, Int, ListOf, Map, Str
from toolkit.contract import (
    Host,
    Resource,
    SecretValue,
    Unsupported,
    bucket_var,
)
from toolkit.dns.route53 import Route53Dns
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable
from toolkit.paths import templates_dir, write_private
from toolkit.stores.s3 import S3Store, client_error
from toolkit.transport.hosts import HOST, SSH_SETTINGS, HostSpec, ed25519_pair

INSTANCE = Map({
    "name": HOST.fields["name"],
    "roles": Field(ListOf(Str(choices=["web", "worker", "db"]), min_items=1, unique=True), required=True,
                   doc="db: Redis runs there, and PostgreSQL with postgres: {on: instance} (else it is RDS)"),
    "type": Field(Str(pattern=r"[a-z0-9]+\.[a-z0-9]+", expected="an EC2 instance type such as t3.small")),
    "ami": Field(Str(pattern=r"ami-[0-9a-f]+", expected="an AMI id (ami-...)")),
    "disk_gb": Field(Int(min=8, max=16384), default=20),
    "root": HOST.fields["root"],
})

REACH = Map({
    "address": Field(Str(expected="an address Lifeboat can reach"), required=True),
    "port": HOST.fields["port"],
    "user": HOST.fields["user"],
    "key": HOST.fields["key"],
    "host_keys": HOST.fields["host_keys"],
    "jump": HOST.fields["jump"],
    "private_address": Field(Str(expected="the address the stack's other hosts use for it")),
})

_SSH = {k: v for k, v in SSH_SETTINGS.items() if k != "hosts"}


class AwsCompute(HostCompute):
    def hosts(self) -> list[Host]:
        found = self.p.discover()
        out = []
        for spec in self.p.specs:
            ec2 = found.get(spec.name, {})
            out.append(Host(spec.name, self.p.listen_address(spec), spec.roles,
                            {"instance_id": ec2.get("id"), "state": ec2.get("state", "missing"),
                             "public_ip": ec2.get("public_ip"), "private_ip": ec2.get("private_ip")}))
        return out


# --------------------------------------------------------------------------------------------------
# The provider


class AwsProvider(TerraformHosts, HostsProvider):
    TYPE = "aws"
    DESCRIPTION = "Amazon Web Services: Terraform-made VPC, EC2, RDS, S3, Route53; Secrets Manager; SSH deploys"
    SERVICES = frozenset({"compute", "database", "cache", "objects", "dns", "secrets"})
    FEATURES = {**HOST_FEATURES, "terraform": True}
    SETTINGS = {
        "region": Field(Str(pattern=r"[a-z]{2}(-[a-z]+)+-\d", expected="an AWS region such as eu-central-1"),
                        doc="default: AWS_REGION"),
        "profile": Field(Str(expected="a profile of ~/.aws/config"), doc="default: the usual AWS chain"),
        "endpoint_url": Field(Str(pattern=r"https?://\S+", expected="an http(s) URL"),
                              doc="send every AWS call here (LocalStack, moto); AWS_ENDPOINT_URL works too"),
        "state_dir": Field(Str(expected="a directory for this target's state (relative to the stack file)"),
                           doc="default .lifeboat/<target>: Terraform state, Lifeboat's keys and state (0700)"),
        "terraform_backend": Field(Map({
            "bucket": Field(Str(expected="an S3 bucket for Terraform state"), required=True),
            "key": Field(Str(expected="the state object key")),
            "region": Field(Str(expected="the bucket's region")),
        }), doc="keep Terraform state in S3 (locked with a lock file) instead of the state directory"),
        "instances": Field(ListOf(INSTANCE, min_items=1), required=True),
        "instance_type": Field(Str(pattern=r"[a-z0-9]+\.[a-z0-9]+", expected="an EC2 instance type"),
                               default="t3.small"),
        "ami": Field(Str(pattern=r"ami-[0-9a-f]+", expected="an AMI id (ami-...)"),
                     doc="Debian 12 or Ubuntu 22.04+ image for every instance (or per instance)"),
        "ssh_user": Field(Str(expected="the AMI's login user"), default="admin"),
        "admin_cidrs": Field(ListOf(Str(pattern=r"[0-9.]+/\d+", expected="a CIDR such as 203.0.113.7/32"),
                                    min_items=1), default=lambda: ["0.0.0.0/0"],
                             doc="who may reach the instances over SSH"),
        "postgres": Field(Map({
            "on": Field(Str(choices=["rds", "instance"]), default="rds",
                        doc="rds: an RDS instance; instance: PostgreSQL on the db instance, run by the same "
                            "host machinery as bare metal (cheaper for small deployments; and what an emulator "
                            "without RDS can deploy)"),
            "instance_class": Field(Str(pattern=r"db\.[a-z0-9]+\.[a-z0-9]+", expected="an RDS class"),
                                    default="db.t3.micro"),
            "storage_gb": Field(Int(min=20, max=65536), default=20),
        }), default=dict, doc="where PostgreSQL runs, and RDS settings"),
        "reach": Field(DictOf(REACH), default=dict,
                       doc="per instance name (or postgres): how to reach it instead of the address AWS reports"),
        "drill_reach": Field(DictOf(REACH), default=dict,
                             doc="like reach, for the scratch copy a drill makes (entries replace reach's); "
                                 "required for postgres when reach has postgres: a drill never restores into "
                                 "the live database"),
        "tunnel_via": Field(Str(expected="an instance name, or none"),
                            doc="the instance Lifeboat tunnels through to RDS (default: the first one)"),
        "dns_wait_seconds": Field(Int(min=0, max=3600), default=300),
        **_SSH,
        **{k: v for k, v in HOST_SETTINGS.items()
           if k in ("redis_port", "postgres_port", "account", "app_account", "runtime", "process_manager", "docker",
                    "proxy")},
    }

    @staticmethod
    def check_settings(settings: dict, where, report, raw) -> None:
        """reach:, drill_reach: and tunnel_via: name instances of this target (or postgres), caught by
        `validate` with the line of the name."""
        from toolkit.config.schema import closest, value_line

        names = sorted(i["name"] for i in settings.get("instances") or [])
        for key in ("reach", "drill_reach"):
            for name in settings.get(key) or {}:
                if name not in names and name != "postgres":
                    near = closest(name, [*names, "postgres"])
                    report.add(where.child(key, value_line(raw, key)).child(name, value_line(raw.get(key), name)),
                               f'"{name}" is neither an instance of this target nor postgres.',
                               f'did you mean "{near}"?' if near else f"instances: {', '.join(names)}.",
                               code="aws.reach_unknown")
        via = settings.get("tunnel_via")
        if via and via != "none" and via not in names:
            report.add(where.child("tunnel_via", value_line(raw, "tunnel_via")), f'"{via}" is not an instance '
                       'of this target (or "none").', f"instances: {', '.join(names)}.", code="aws.tunnel_unknown")

    def __init__(self, stack, target):
        super().__init__(stack, target)
        configured = self.settings.get("state_dir")
        self.state_root = ((stack.root / configured) if configured else stack.root / ".lifeboat" / target.name).resolve()
        self.api = AwsApi(self.settings, self.label)
        self.prefix = re.sub(r"[^a-z0-9-]", "-", f"{stack.name}-{target.name}".lower())[:40].strip("-")
        self.infra_label = self.prefix
        self._outputs: dict | None = None
        self._planned = False
        self._infra_done = False
        self._tunnel = None
        self.specs = self._specs({})
        self.directory = self._directory()

    # ------------------------------------------------------------------ hosts from Terraform outputs
    def _specs(self, outputs: dict) -> list[HostSpec]:
        reach = self.settings.get("reach") or {}
        hosts = (outputs or {}).get("hosts") or {}
        out = []
        for inst in self.settings["instances"]:
            name = inst["name"]
            over = reach.get(name) or {}
            found = hosts.get(name) or {}
            key = over.get("key")
            if key:
                key = str((self.stack.root / os.path.expanduser(key)).resolve())
            else:
                key = str(self.state_root / "ssh" / "id_ed25519")
            pinned = tuple(over.get("host_keys") or ())
            if not over and not pinned:
                pinned = (self.host_key(name, create=False) or "",)
                pinned = tuple(p for p in pinned if p)
            out.append(HostSpec(name=name, address=over.get("address") or found.get("public_ip") or "",
                                roles=tuple(inst["roles"]), port=over.get("port"),
                                root=inst.get("root") or self.settings.get("root") or "/srv/lifeboat",
                                user=over.get("user") or self.settings.get("ssh_user") or "admin", key=key,
                                private_address=over.get("private_address") or found.get("private_ip"),
                                host_keys=pinned, jump=over.get("jump")))
        return out

    def conn(self, name: str):
        spec = self.spec(name)
        if not spec.address:
            self.outputs()
            spec = self.spec(name)
            if not spec.address:
                raise ProviderError(f"{self.label}: instance {name} has no address yet (not created?).",
                                    hint=f"run `lifeboat up --on {self.target.name}`.", code="aws.no_instance")
        return self.directory.connection(name)

    @property
    def pg_on_instance(self) -> bool:
        """Whether PostgreSQL runs on the db instance (postgres: {on: instance}) rather than on RDS."""
        return (self.settings.get("postgres") or {}).get("on") == "instance"

    def host_postgres_version(self) -> int | None:
        return HostsProvider.host_postgres_version(self) if self.pg_on_instance else None

    # ------------------------------------------------------------------ local state (0700 directory)
    def state(self) -> dict:
        try:
            return json.loads((self.state_root / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def save_state(self, data: dict) -> None:
        self._private_dir(self.state_root)
        write_private(self.state_root / "state.json", json.dumps(data, indent=1, sort_keys=True).encode())

    def login_key(self) -> str:
        """The public half of the key Lifeboat logs in with (made once, private half 0600 here)."""
        path = self.state_root / "ssh" / "id_ed25519"
        if not path.exists():
            self._private_dir(path.parent)
            private, public = ed25519_pair(f"lifeboat@{self.prefix}")
            write_private(path, private)
            write_private(path.with_suffix(".pub"), public.encode())
        return path.with_suffix(".pub").read_text().strip()

    def host_key(self, name: str, *, create: bool = True) -> str | None:
        """The pinned public host key of instance ``name`` (its private half goes to the instance through
        cloud-init, so the first SSH connection is already verified)."""
        path = self.state_root / "ssh" / f"host-{name}"
        if not path.exists():
            if not create:
                return None
            self._private_dir(path.parent)
            private, public = ed25519_pair(f"{name}")
            write_private(path, private)
            write_private(path.with_suffix(".pub"), public.encode())
        return " ".join(path.with_suffix(".pub").read_text().split()[:2])

    def user_data(self, name: str) -> str:
        self.host_key(name)
        private = (self.state_root / "ssh" / f"host-{name}").read_text()
        public = (self.state_root / "ssh" / f"host-{name}.pub").read_text().strip()
        indented = "\n".join("    " + line for line in private.strip().splitlines())
        return ("#cloud-config\n"
                "ssh_deletekeys: true\n"
                "ssh_genkeytypes: []\n"
                "ssh_keys:\n"
                f"  ed25519_private: |\n{indented}\n"
                f"  ed25519_public: {public}\n"
                "ssh_authorized_keys:\n"
                f"  - {self.login_key()}\n")

    # ------------------------------------------------------------------ Terraform
    def workspace(self):
        from toolkit.transport.terraform import Workspace

        self._private_dir(self.state_root)
        env = {}
        if self.api.profile:
            env["AWS_PROFILE"] = self.api.profile
        return Workspace(self.state_root / "terraform", templates_dir() / "terraform" / "aws", env=env,
                         label=f"{self.label} terraform")

    def terraform_root(self) -> dict:
        provider: dict = {"region": self.api.region}
        if self.api.profile:
            provider["profile"] = self.api.profile
        endpoints = {s: self.api.endpoint(s) for s in ENDPOINTS if self.api.endpoint(s)}
        if endpoints:
            provider.update({"endpoints": [endpoints], "skip_credentials_validation": True,
                             "skip_metadata_api_check": True, "skip_requesting_account_id": True,
                             "s3_use_path_style": True})
        root: dict = {"terraform": {"required_providers": {"aws": {"source": "hashicorp/aws",
                                                                   "version": ">= 5.0, < 6.0"}}},
                      "provider": {"aws": provider}}
        backend = self.settings.get("terraform_backend")
        if backend:
            s3 = {"bucket": backend["bucket"], "key": backend.get("key") or f"lifeboat/{self.prefix}.tfstate",
                  "region": backend.get("region") or self.api.region, "use_lockfile": True, "encrypt": True}
            if self.api.endpoint("s3"):
                s3.update({"endpoints": {"s3": self.api.endpoint("s3"), "sts": self.api.endpoint("sts")},
                           "use_path_style": True, "skip_credentials_validation": True,
                           "skip_requesting_account_id": True, "skip_metadata_api_check": True,
                           "skip_region_validation": True})
            root["terraform"]["backend"] = {"s3": s3}
        return root

    def terraform_variables(self) -> dict:
        pg = self.stack.postgres
        rds = self.settings.get("postgres") or {}
        web = self.stack.web_services()
        ports = sorted({self.app_port(s, i) for s in web for i in range(s.replicas)})
        if self.stack.redis is not None:
            ports.append(self.settings.get("redis_port") or 6379)
        if pg is not None and self.pg_on_instance:  # (between the instances only, as the app ports)
            ports.append(self.settings.get("postgres_port") or 5432)
        region = self.api.region or "us-east-1"
        return {
            "name": self.prefix,
            "availability_zones": [f"{region}a", f"{region}b"],
            "admin_cidrs": list(self.settings.get("admin_cidrs") or ["0.0.0.0/0"]),
            "public_ports": sorted({p for p in ((self.settings.get("proxy") or {}).get("http_port", 80),
                                                (self.settings.get("proxy") or {}).get("https_port", 443))}),
            "app_ports": ports,
            "instances": {i["name"]: {"type": i.get("type") or self.settings.get("instance_type") or "t3.small",
                                      "ami": i.get("ami") or self.settings.get("ami") or "",
                                      "disk_gb": i.get("disk_gb") or 20, "roles": list(i["roles"])}
                          for i in self.settings["instances"]},
            "ssh_public_key": self.login_key(),
            "postgres": None if pg is None or self.pg_on_instance else {
                "version": str(pg.version), "instance_class": rds.get("instance_class") or "db.t3.micro",
                "storage_gb": rds.get("storage_gb") or 20, "database": pg.database, "username": RDS_ADMIN},
            "buckets": {name: {"public": bool(b.public)} for name, b in sorted(self.stack.buckets.items())},
            "dns_zone": self.stack.dns.zone if self.stack.dns and self.stack.dns.provider == self.target.name else None,
            "tags": {"lifeboat:target": self.target.name},
        }

    def terraform_secrets(self) -> dict:
        out: dict = {"user_data": {i["name"]: SecretValue(self.user_data(i["name"]))
                                   for i in self.settings["instances"]}}
        if self.stack.postgres and not self.pg_on_instance:
            out["postgres_password"] = self.internal_secret("rds_admin")
        return out

    def _terraform_plan(self):
        ws = self.workspace()
        ws.prepare(self.terraform_root(), self.terraform_variables())
        secrets = self.terraform_secrets()
        return ws, secrets

    # ------------------------------------------------------------------ preflight
    def scratch_settings(self, name: str) -> dict:
        """A second deployment of the same Terraform under the copy's own name (its own VPC, instances,
        RDS instance, buckets and secrets), from a state folder (or backend key) of its own, destroyed with
        the copy; no DNS. Instances Lifeboat reaches through ``reach:`` rather than at the address AWS
        reports may be the live deployment's own machines, so there everything of the copy is kept apart
        as on bare metal: roots suffixed ``-<name>``, every port moved up. Where ``reach: postgres``
        redirects the live database, the copy's must come from ``drill_reach: postgres``: a drill never
        restores into the live database."""
        reach = {**(self.settings.get("reach") or {}), **(self.settings.get("drill_reach") or {})}
        if "postgres" in (self.settings.get("reach") or {}) and "postgres" not in (self.settings.get("drill_reach") or {}) \
                and not self.pg_on_instance:
            raise Unsupported(f"{self.label} reaches its database through reach: postgres, and a scratch copy "
                              "needs a database of its own: set drill_reach: postgres: {address, port} for it")
        settings: dict = {**self.settings, "reach": reach, "state_dir": f"{self.state_root}-{name}"}
        backend = self.settings.get("terraform_backend")
        if backend:
            settings["terraform_backend"] = {**backend, "key": f"{backend.get('key') or f'lifeboat/{self.prefix}'}"
                                                               f"-{name}.tfstate"}
        if any(i["name"] in reach for i in self.settings["instances"]):  # maybe the live machines
            ports = {"redis_port": self.settings.get("redis_port") or 6379}
            if self.pg_on_instance:
                ports["postgres_port"] = self.settings.get("postgres_port") or 5432
            settings.update(self.ports_beside(ports),
                            instances=[{**i, "root": f"{spec.root}-{name}"}
                                       for i, spec in zip(self.settings["instances"], self.specs, strict=True)])
        return settings

    def media_on_hosts(self) -> bool:
        return False  # the buckets are S3 buckets

    def free_space(self) -> list[dict]:
        """S3 has no ceiling; RDS has the storage the stack allocates (growing it is a plan change)."""
        if not self.stack.postgres:
            return []
        if self.pg_on_instance:
            return HostsProvider.free_space(self)
        gb = (self.settings.get("postgres") or {}).get("storage_gb") or 20
        return [{"where": f"RDS ({gb} GB allocated)", "kinds": ["database"], "free": gb * 10**9}]

    def check(self) -> dict:
        facts = {"identity": self.api.identity(), "region": self.api.region, "state_dir": str(self.state_root)}
        if self.api.emulated:
            facts["endpoint"] = self.api.endpoint("sts")
        for inst in self.settings["instances"]:
            if not (inst.get("ami") or self.settings.get("ami")):
                raise BadInput(f'{self.label}: instance {inst["name"]} has no AMI: set ami: under the target '
                               "or the instance.", hint="a Debian 12 image of your region (ami-...).",
                               code="aws.no_ami")
        for svc in self.stack.services.values():
            self.placement(svc)
        if self.stack.redis is not None:
            self.first("db", "Redis")
        if self.stack.postgres and self.pg_on_instance:
            self.first("db", "PostgreSQL")
        self._check_ports()
        if self.stack.postgres and not self.pg_on_instance:
            try:
                self._check_rds()
            except ProviderUnreachable as exc:
                if exc.code != "aws.rds_unavailable":
                    raise
                facts["unavailable"] = [exc]  # a plan goes on (Terraform plans RDS without it); up stops
        if shutil.which("terraform") is None:
            raise ProviderUnreachable(f"{self.label}: the terraform binary is not on PATH.",
                                      hint="install Terraform >= 1.5.", code="terraform.missing")
        return facts

    def _check_rds(self) -> None:
        import botocore.exceptions

        try:
            self.api.client("rds").describe_db_instances(MaxRecords=20)
        except botocore.exceptions.ClientError as exc:
            code, message = client_error(exc)
            if code in ("InternalFailure", "NotImplemented", "501") or "license" in message.lower() \
                    or "not yet implemented" in message.lower() or "not included" in message.lower():
                raise ProviderUnreachable(f"RDS is not available at {self.api.endpoint('rds') or self.api.region}: "
                                          f"{message.strip()}.", hint="the stack's PostgreSQL needs RDS there, or "
                                          "postgres: {on: instance} under the target (PostgreSQL on the db "
                                          "instance).", code="aws.rds_unavailable") from None
            raise ProviderError(f"{self.label}: RDS DescribeDBInstances: {code} {message}", code="aws.rds") from None

    # ------------------------------------------------------------------ lifecycle
    def observe(self) -> list[Resource]:
        ws = self.workspace()
        out: list[Resource] = []
        if ws.initialised:
            for res in ws.resources():  # from the state alone (the saved plan stays for apply)
                out.append(Resource("infra", res["address"], {}, {"id": res["id"]}))
        state = self.state()
        if state.get("postgres") and not self.pg_on_instance:
            pgs = state["postgres"]
            out.append(Resource("database", pgs["database"], {"version": pgs["version"],
                                                             "extensions": sorted(pgs.get("extensions", [])),
                                                             "running": True}, {"host": "rds"}))
        if out or state:
            on_hosts = HostsProvider.observe(self)
            out.extend(r for r in on_hosts if r.kind != "bucket" and (r.kind != "database" or self.pg_on_instance))
        return out

    def desired(self, resources, secrets=None):
        ws, tf_secrets = self._terraform_plan()
        out = self._planned_infra(ws.plan(tf_secrets))
        # Buckets are Terraform resources here; the rest is planned as on bare metal.
        out.extend(HostsProvider.desired(self, [r for r in resources if r.kind != "bucket"], secrets))
        return out

    def _destroy_infra(self) -> None:
        store = self.objects()
        for bucket in (self.outputs().get("buckets") or {}):
            removed = store.purge(bucket)
            self.events.step(f"emptied bucket {store.real(bucket)} ({removed} object versions)")
        ws, tf_secrets = self._terraform_plan()
        self.events.step(f"terraform destroy ({self.infra_label})")
        ws.destroy(tf_secrets)

    # ------------------------------------------------------------------ database on RDS
    def rds_address(self) -> tuple[str, int]:
        over = (self.settings.get("reach") or {}).get("postgres")
        if over:
            return over["address"], int(over.get("port") or 5432)
        found = self.outputs().get("postgres")
        if not found:
            raise ProviderError(f"{self.label}: no RDS instance yet.", hint=f"run `lifeboat up --on "
                                f"{self.target.name}`.", code="aws.no_rds")
        return self._rds_endpoint(found["identifier"]) or (found["address"], int(found["port"]))

    def _rds_endpoint(self, identifier: str) -> tuple[str, int] | None:
        """The endpoint RDS reports now (it can change, e.g. after a restore), or None if it reports none."""
        import botocore.exceptions

        try:
            found = self.api.client("rds").describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        except botocore.exceptions.ClientError:
            return None
        endpoint = (found[0] if found else {}).get("Endpoint") or {}
        return (endpoint["Address"], int(endpoint["Port"])) if endpoint.get("Address") else None

    def database_endpoint(self) -> tuple[str, int]:
        host, port = self.rds_address()
        via = self.tunnel_host()
        if via is None:
            return host, port
        if self._tunnel is None or self._tunnel[0] != (host, port):
            from toolkit.transport.tunnel import forward

            self.close_tunnel()
            ctx = forward(self.conn(via), host, port)
            self._tunnel = ((host, port), ctx, ctx.__enter__())
        return self._tunnel[2]

    def close_tunnel(self) -> None:
        if self._tunnel is not None:
            _, ctx, _ = self._tunnel
            self._tunnel = None
            ctx.__exit__(None, None, None)

    def tunnel_host(self) -> str | None:
        via = self.settings.get("tunnel_via")
        if via == "none":
            return None
        return via or self.settings["instances"][0]["name"]

    def database(self):
        return HostsProvider.database(self) if self.pg_on_instance else RdsDatabase(self)

    def database_url(self) -> SecretValue:
        """The URL the apps use (from inside the VPC: no tunnel)."""
        from urllib.parse import quote

        if self.pg_on_instance:
            return HostsProvider.database_url(self)
        pg = self.stack.postgres
        host, port = self.rds_address()
        password = quote(self.internal_secret("pg_app").reveal_text(), safe="")
        return SecretValue(f"postgresql://{pg.user}:{password}@{host}:{port}/{pg.database}")

    def _apply_database(self, before, after) -> None:
        if self.pg_on_instance:
            return HostsProvider._apply_database(self, before, after)
        from psycopg import sql

        pg = self.stack.postgres
        db = self.database()
        app_pw = self.internal_secret("pg_app").reveal_text()
        with db.connect(admin=True, database=pg.database) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(pg.user),
                                                                            sql.Literal(app_pw)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(pg.user), sql.Identifier(RDS_ADMIN)))
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(pg.database),
                                                                        sql.Identifier(pg.user)))
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(pg.user)))
            trusted = {r[0] for r in conn.execute("SELECT name FROM pg_available_extension_versions WHERE trusted")}
            for ext in pg.extensions:
                if ext not in trusted:  # needs the admin (rds_superuser); it then belongs to the admin
                    conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
        # Trusted extensions belong to the app's role, so that a dump restores with that role alone.
        with db.connect() as conn:
            for ext in pg.extensions:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
        state = self.state()
        state["postgres"] = {"database": pg.database, "user": pg.user, "version": pg.version,
                             "extensions": sorted(pg.extensions), "host": "rds"}
        self.save_state(state)

    def _delete_database(self, resource) -> None:
        if self.pg_on_instance:
            return HostsProvider._delete_database(self, resource)
        state = self.state()  # RDS itself goes with the Terraform resources
        state.pop("postgres", None)
        self.save_state(state)

    # ------------------------------------------------------------------ services on instances
    def bucket_env(self, spec):
        """The buckets are S3's (``s3://<real name>``, and the endpoint when the target names one), the same
        on every instance; with the region the SDKs read. Given before the env templates are resolved, so
        a template may use them (``${BUCKET_MEDIA_NAME}``)."""
        names = self.outputs().get("buckets") or {}
        env = {}
        for bucket in self.stack.buckets:
            env[bucket_var(bucket, "URL")] = f"s3://{names.get(bucket, bucket)}"
            if self.api.endpoint("s3"):
                env[bucket_var(bucket, "ENDPOINT")] = self.api.endpoint("s3")
        env["AWS_REGION"] = self.api.region or ""
        return env

    def _volumes(self, host: str) -> tuple[str, ...]:
        return ()

    # ------------------------------------------------------------------ accessors and lock
    def discover(self) -> dict[str, dict]:
        """This stack's instances as EC2 reports them (by the lifeboat:stack tag), whatever the local state."""
        ec2 = self.api.client("ec2")
        out = {}
        paginator = ec2.get_paginator("describe_instances")
        for page in paginator.paginate(Filters=[{"Name": "tag:lifeboat:stack", "Values": [self.prefix]}]):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    state = inst.get("State", {}).get("Name")
                    name = tags.get("lifeboat:host")
                    if name and (name not in out or state == "running"):
                        out[name] = {"id": inst["InstanceId"], "state": state,
                                     "public_ip": inst.get("PublicIpAddress"),
                                     "private_ip": inst.get("PrivateIpAddress")}
        return out

    def compute(self) -> AwsCompute:
        return AwsCompute(self)

    def objects(self) -> S3Store:
        names = self.outputs().get("buckets") or {b: f"{self.prefix}-{b}" for b in self.stack.buckets}
        return S3Store(self.api, names)

    def secrets(self) -> SecretsManagerStore:
        return SecretsManagerStore(self.api, f"{self.stack.name}/{self.target.name}/")

    def dns(self) -> Route53Dns:
        dns = self.stack.dns
        managed = dns.zone if dns and dns.provider == self.target.name else None
        return Route53Dns(self.api, self.settings.get("dns_wait_seconds", 300), managed_zone=managed)
