"""The machinery of a stack on N SSH hosts, shared by the providers whose machines are hosts
(``baremetal``, ``terraform``, ``aws``): placement by role, the primary host's state file and lock, preflight,
PostgreSQL and Redis on the db host, buckets on the storage host (SFTP) and the media gateway (:mod:`providers.common.media`), then the app
services (:mod:`providers.common.apps`) and the TLS proxy (:mod:`providers.common.proxy`). A provider is
composed from it: its own module gives TYPE, SETTINGS (from ``HOST_SETTINGS``) and the host specs.

Not a provider type of its own: the registry never names it."""

from __future__ import annotations

import json
import secrets as pysecrets
import sys
from contextlib import contextmanager

from providers.common.apps import AppDeploys
from providers.common.hostservices import PG_SUPERUSER, HostCache, HostCompute, HostDatabase, RemoteSecrets
from providers.common.media import MediaGateway
from providers.common.proxy import TlsProxy
from toolkit.config.schema import Bool, Field, Int, Map, Str
from toolkit.contract import (
    KindDispatch,
    Provider,
    Resource,
    SecretValue,
    Unsupported,
    bucket_var,
    desired_resources,
)
from toolkit.errors import BadInput, ProviderError, ToolkitError
from toolkit.hostops.bootstrap import HostFacts
from toolkit.hostops.builds import release_id
from toolkit.hostops.docker import DockerRuntime
from toolkit.hostops.lock import HostLock
from toolkit.hostops.many import on_hosts
from toolkit.hostops.postgres import PostgresHost
from toolkit.hostops.redis import RedisHost
from toolkit.hostops.runtime import ProcessRuntime, SystemdRuntime
from toolkit.hostops.shell import sh
from toolkit.stores.sftpstore import RemoteDirectoryStore
from toolkit.transport.hosts import HostSpec

#: what every hosts provider can do (a provider adds its own, e.g. terraform)
HOST_FEATURES = {"runtime.process": True, "runtime.docker": True, "replicas": True, "tls": True, "lock": True,
                 "multi_host": True, "public_addresses": True, "releases": True, "ssh_hosts": True,
                 "ssh_keys": True}

#: the settings of the host machinery, beside SSH_SETTINGS; a provider takes the ones it offers
HOST_SETTINGS = {
    "postgres_port": Field(Int(min=1, max=65535), default=5432),
    "redis_port": Field(Int(min=1, max=65535), default=6379),
    "account": Field(Str(pattern=r"[a-z_][a-z0-9_-]{0,31}", expected="a system account name"),
                     default="lifeboat", doc="account PostgreSQL runs as on the db host"),
    "app_account": Field(Str(pattern=r"[a-z_][a-z0-9_-]{0,31}", expected="a system account name"),
                         default="lifeboat-app",
                         doc="process runtime: the unprivileged account app processes run as (created)"),
    "media_port": Field(Int(min=1, max=65535), default=8790,
                        doc="the media gateway's port on the storage host's private address (apps on the "
                            "other hosts reach the buckets through it)"),
    "media_gateway": Field(Bool(), default=False,
                           doc="run the media gateway (with its S3 API) even when every app runs on the storage "
                               "host: for apps that only speak S3"),
    "media_mode": Field(Str(pattern=r"0?[0-7]{3}", expected="an octal file mode such as 0644"), default="0644",
                        doc="mode of the media files Lifeboat writes on the storage host (copies, restores), "
                            "owned by the bucket folder's owner (the app account); folders get x where r is"),
    "port_offset": Field(Int(min=0, max=50000), default=0,
                         doc="added to every web service's port on these hosts (a drill's scratch copy runs "
                             "beside the target this way)"),
    "process_manager": Field(Str(choices=["auto", "systemd", "supervisor"]), default="auto",
                             doc="process runtime: systemd units where systemd runs and Lifeboat logs in as "
                                 "root (auto), always (systemd), or Lifeboat's supervisor everywhere"),
    "runtime": Field(Str(choices=["process", "docker"]), default="process",
                     doc="process: programs under systemd or Lifeboat's supervisor (process_manager); "
                         "docker: containers built on the hosts"),
    "docker": Field(Map({
        "base_image": Field(Str(expected="an image the Dockerfiles build FROM (passed as build arg BASE)")),
    }), doc="docker runtime settings"),
    "proxy": Field(Map({
        "http_port": Field(Int(min=1, max=65535), default=80),
        "https_port": Field(Int(min=1, max=65535), default=443),
        "acme_ca": Field(Str(pattern=r"https://\S+", expected="an ACME directory URL")),
        "acme_ca_root": Field(Str(expected="a PEM file with the CA that signs the ACME server's HTTPS")),
    }), doc="the TLS reverse proxy (Caddy) on every web host; runs when the stack has tls:"),
}


class HostsProvider(AppDeploys, TlsProxy, MediaGateway, KindDispatch, Provider):
    """The stack on ``self.specs`` (set by the subclass, with ``self.directory``, before use)."""

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self.parallel = self.settings.get("parallel", True)
        self.runtime_kind = self.settings.get("runtime") or "process"
        self._app_python: dict[str, str] = {}  # host -> the interpreter its app account can run
        self._facts: dict[str, HostFacts] = {}
        self._release_ids: dict[str, str] = {}  # release_of

    # ------------------------------------------------------------------ hosts
    def spec(self, name: str) -> HostSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise ProviderError(f"{self.label}: no host {name}.")

    def conn(self, name: str):
        return self.directory.connection(name)

    def primary_spec(self) -> HostSpec:
        return self.specs[0]

    def primary(self):
        return self.conn(self.primary_spec().name)

    def root(self, name: str) -> str:
        return self.spec(name).root

    def listen_address(self, spec: HostSpec) -> str:
        return spec.private_address or self.directory.params(spec)["address"]

    def hosts_with(self, role: str) -> list[HostSpec]:
        return [s for s in self.specs if s.has(role)]

    def media_on_hosts(self) -> bool:
        """Whether the stack's buckets live on the storage host (a subclass may keep them elsewhere)."""
        return bool(self.stack.buckets)

    def bucket_env(self, spec: HostSpec) -> dict[str, str]:
        """The ``BUCKET_<NAME>_*`` variables of the apps on host ``spec`` (docs/app-contract.md): the
        storage host's directories (file://) on that host, what ``remote_bucket_env`` says elsewhere; and
        wherever the media gateway runs, its S3 endpoint and key pair, on every host."""
        storage = self.hosts_with("storage")
        if self.media_on_hosts() and storage and storage[0].name == spec.name:
            env = {bucket_var(b, "URL"): f"file://{spec.root}/objects/{b}" for b in self.stack.buckets}
            return {**env, **self.s3_env()}
        return self.remote_bucket_env()

    def remote_bucket_env(self, *, create: bool = True) -> dict[str, str]:
        """The buckets for apps on hosts other than the storage host: the media gateway there (its own
        protocol in ``_URL``/``_TOKEN``, and S3: ``_ENDPOINT``, ``_ACCESS_KEY_ID``...)."""
        if not self.gateway_needed():
            return {}
        from urllib.parse import quote

        spec = self.first("storage", "an object store")
        token = self.internal_secret("media_token", create=create)
        env = {}
        for bucket in sorted(self.stack.buckets):
            env[bucket_var(bucket, "URL")] = f"http://{self.listen_address(spec)}:{self.media_port}/{quote(bucket)}"
            env[bucket_var(bucket, "TOKEN")] = token.reveal_text() if token is not None else ""
        return {**env, **self.s3_env(create=create)}

    def s3_env(self, *, create: bool = True) -> dict[str, str]:
        """The media gateway's S3 API for each bucket (toolkit/agents/s3api.py), where the gateway runs."""
        if not self.gateway_needed():
            return {}
        keys = self.s3_keys(create=create)
        spec = self.first("storage", "an object store")
        env = {}
        for bucket in sorted(self.stack.buckets):
            env[bucket_var(bucket, "ENDPOINT")] = f"http://{self.listen_address(spec)}:{self.media_port}"
            env[bucket_var(bucket, "REGION")] = "us-east-1"
            env[bucket_var(bucket, "ACCESS_KEY_ID")] = keys[0] if keys else ""
            env[bucket_var(bucket, "SECRET_ACCESS_KEY")] = keys[1] if keys else ""
        return env

    def s3_keys(self, *, create: bool = True) -> tuple[str, str] | None:
        """(access key id, secret) of the gateway's S3 API: one pair per target, made once."""
        import hashlib

        secret = self.internal_secret("media_s3_secret", create=create)
        if secret is None:
            return None
        return "LB" + hashlib.sha256(b"access key id:" + secret.reveal()).hexdigest()[:18].upper(), secret.reveal_text()

    def release_of(self, svc) -> str:
        """The service's release id (toolkit/hostops/builds.py: it hashes the whole build folder), once per
        provider: the plan and the proxy's configuration ask for it for every web host."""
        if svc.name not in self._release_ids:
            self._release_ids[svc.name] = release_id(svc)
        return self._release_ids[svc.name]

    def app_port(self, svc, replica: int) -> int:
        """Where replica ``replica`` of web service ``svc`` listens on its host."""
        return svc.port + replica + int(self.settings.get("port_offset") or 0)

    SCRATCH_OFFSET = 10000

    def scratch_settings(self, name: str) -> dict:
        """The same hosts with everything of the copy apart: each host's root gets the suffix ``-<name>``
        (state, secrets, lock, releases, PostgreSQL and Redis data, objects), and every port moves up by
        SCRATCH_OFFSET (PostgreSQL, Redis, the media gateway, the web services, the proxy), so a drill can
        run beside a deployment on the very hosts it rehearses."""
        hosts = [{**host, "root": f"{spec.root}-{name}"} for host, spec in zip(self.settings["hosts"], self.specs,
                                                                               strict=True)]
        return {**self.settings, "hosts": hosts, **self.ports_beside({
            "postgres_port": self.settings.get("postgres_port") or 5432,
            "redis_port": self.settings.get("redis_port") or 6379, "media_port": self.media_port})}

    def ports_beside(self, ports: dict[str, int]) -> dict:
        """The settings that move a scratch copy's ports clear of the deployment on the same hosts: each of
        ``ports`` (setting: its value now), the web services' and the proxy's, up by SCRATCH_OFFSET. Refused
        for the docker runtime (containers are named after the stack) and past port 65535."""
        if self.runtime_kind == "docker":
            raise Unsupported(f"{self.label} runs containers named after the stack; a scratch copy beside them "
                              "is not supported yet (process runtime only)")
        offset = self.SCRATCH_OFFSET
        proxy = {**{"http_port": 80, "https_port": 443}, **(self.settings.get("proxy") or {})}
        highest = max([*ports.values(), proxy["http_port"], proxy["https_port"],
                       *[self.app_port(s, s.replicas - 1) for s in self.stack.web_services()]])
        if highest + offset > 65535:
            raise Unsupported(f"{self.label}: port {highest} + {offset} is past 65535, so a scratch copy cannot "
                              "sit beside it")
        return {**{k: v + offset for k, v in ports.items()},
                "port_offset": int(self.settings.get("port_offset") or 0) + offset,
                "proxy": {**proxy, "http_port": proxy["http_port"] + offset,
                          "https_port": proxy["https_port"] + offset}}

    def _retire(self, host: str, state: dict, program: str, folder: str) -> None:
        """Stop ``program`` on ``host`` (no longer in ``state``), keep the host's others running, and remove
        its folder under the host's root."""
        runtime = self.runtime(host)
        remaining = self._host_programs(host, state)
        if remaining and runtime.running():
            runtime.apply(remaining)
        elif not remaining:
            runtime.stop()
        else:
            runtime.reap([program])
        self.conn(host).run(["rm", "-rf", f"{self.root(host)}/{folder}"])

    def free_space(self) -> list[dict]:
        """Free bytes on the filesystems holding the db host's root (PostgreSQL) and the storage host's
        (objects), asked with df on the hosts; one entry when both are the same."""
        wanted = []
        if self.stack.postgres:
            wanted.append(("database", self.first("db", "PostgreSQL")))
        if self.media_on_hosts():
            wanted.append(("objects", self.first("storage", "an object store")))
        out: dict[tuple[str, str], dict] = {}
        for kind, spec in wanted:
            result = sh(self.conn(spec.name), 'p="$1"; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '
                                              'df -P -B1 -- "$p" | tail -n 1', spec.root)
            fields = result.text.split()
            mount = fields[-1]
            entry = out.setdefault((spec.name, mount), {"where": f"{spec.name}:{mount}", "kinds": [],
                                                        "free": int(fields[3])})
            entry["kinds"].append(kind)
        return list(out.values())

    def first(self, role: str, what: str) -> HostSpec:
        found = self.hosts_with(role)
        if not found:
            raise BadInput(f'{self.label}: the stack needs {what}, but no host has the role "{role}".',
                           hint=f'add "{role}" to the roles of one of the hosts.', code="host.missing_role")
        return found[0]

    def docker(self, name: str) -> DockerRuntime:
        spec = self.spec(name)
        return DockerRuntime(self.conn(name), spec.root, stack=self.stack.name, host=name,
                             docker_host=spec.docker_host)

    def app_python(self, host: str) -> str:
        """The interpreter the app account can run on ``host`` (asked once per host)."""
        if host not in self._app_python:
            from toolkit.hostops.bootstrap import app_interpreter

            self._app_python[host] = app_interpreter(self.conn(host))
        return self._app_python[host]

    def app_account(self, host: str) -> str | None:
        """The account app processes run as on ``host`` (created when missing); None when Lifeboat does
        not log in as root there (then they run as the login user)."""
        if not self.facts(host).is_root:
            return None
        account = self.settings.get("app_account") or "lifeboat-app"
        from toolkit.hostops.bootstrap import ensure_account

        ensure_account(self.conn(host), account)
        return account

    def bootstrap_plan(self) -> dict[str, dict]:
        """Per host: its OS, the packages its roles need and which of them are missing. Read-only."""
        from toolkit.hostops.bootstrap import app_packages, missing_packages, packages_needed

        def look(name: str) -> dict:
            spec = self.spec(name)
            facts = self.facts(name).get()
            app = any(spec.has(svc.role) for svc in self.stack.services.values())
            needed = packages_needed(spec.roles, postgres=self.host_postgres_version(),
                                     redis=self.stack.redis is not None, tls=self.stack.tls is not None,
                                     runtime=self.runtime_kind, app=app)
            if self.runtime_kind == "process":  # (in an image, the image has them)
                needed += [p for svc in self.stack.services.values() if name in self.placement(svc)
                           for p in app_packages(svc) if p not in needed]
            debian = facts["os"] in ("debian", "ubuntu")
            return {"os": f"{facts['os']} {facts['os_version']}".strip(), "supported": debian,
                    "root": facts["uid"] == 0, "needed": needed,
                    "missing": missing_packages(self.conn(name), needed) if debian else needed}

        return on_hosts([s.name for s in self.specs], look, parallel=self.parallel)

    def host_postgres_version(self) -> int | None:
        """The PostgreSQL major version the db host runs (None where the database is not on a host)."""
        return self.stack.postgres.version if self.stack.postgres else None

    def bootstrap(self, plan: dict[str, dict]) -> None:
        """Install what is missing (Debian/Ubuntu, as root) and create the accounts and directories."""
        from toolkit.hostops.bootstrap import install_packages

        def run(name: str) -> None:
            item = plan[name]
            if item["missing"]:
                if not item["supported"]:
                    raise ProviderError(f"{name}: {item['os']} is not Debian or Ubuntu; install "
                                        f"{', '.join(item['missing'])} by hand.", code="host.unsupported_os")
                if not item["root"]:
                    raise ProviderError(f"{name}: installing packages needs root; log in as root or install "
                                        f"{', '.join(item['missing'])} by hand.", code="host.not_root")
                install_packages(self.conn(name), item["missing"])
            spec = self.spec(name)
            sh(self.conn(name), 'mkdir -p "$1" && chmod 711 "$1"', spec.root)
            if item["root"] and any(spec.has(svc.role) for svc in self.stack.services.values()) and \
                    self.runtime_kind == "process":
                self.app_account(name)

        on_hosts(list(plan), run, parallel=self.parallel)

    def programs_status(self, host: str, services: dict) -> dict:
        """What runs on ``host``, by program name: the supervisor's programs and, where a service uses the
        docker runtime there, the stack's containers."""
        runtime = self.runtime(host)
        status = runtime.status() if runtime.running() else {}
        if any(svc.get("runtime") == "docker" and host in svc.get("hosts", []) for svc in services.values()):
            status.update(self.docker(host).programs())
        return status

    def runtime(self, host: str) -> ProcessRuntime:
        """What keeps the programs on ``host`` running: systemd units where systemd is the init system and
        Lifeboat logs in as root (setting process_manager), otherwise Lifeboat's supervisor."""
        chosen = self.settings.get("process_manager") or "auto"
        facts = self.facts(host).get() if chosen != "supervisor" else {}
        if chosen == "systemd" and not (facts.get("systemd") and facts.get("uid") == 0):
            raise BadInput(f"{self.label}: process_manager: systemd, but {host} does not run systemd or Lifeboat "
                           "does not log in there as root.", hint="use process_manager: auto or supervisor.",
                           code="host.no_systemd")
        if chosen != "supervisor" and facts.get("systemd") and facts.get("uid") == 0:
            return SystemdRuntime(self.conn(host), self.root(host), facts["python3"] or "/usr/bin/python3")
        return ProcessRuntime(self.conn(host), self.root(host))

    def facts(self, name: str) -> HostFacts:
        if name not in self._facts:
            self._facts[name] = HostFacts(self.conn(name))
        return self._facts[name]

    def placement(self, svc) -> list[str]:
        """The hosts that run ``svc``: every host of its role (a singleton: the first)."""
        hosts = [s.name for s in self.hosts_with(svc.role)]
        if not hosts:
            raise BadInput(f'{self.label}: service {svc.name} has role {svc.role}, but no host has that role.',
                           hint=f'add "{svc.role}" to the roles of a host.', code="host.missing_role")
        return hosts[:1] if svc.singleton else hosts

    def postgres(self, version: int | None = None) -> PostgresHost:
        spec = self.first("db", "PostgreSQL")
        version = version or (self.stack.postgres.version if self.stack.postgres else None) or \
            self.state().get("postgres", {}).get("version", 15)
        return PostgresHost(self.conn(spec.name), root=spec.root, version=version,
                            listen=self.listen_address(spec), port=self.settings.get("postgres_port") or 5432,
                            account=self.settings.get("account") or "lifeboat",
                            as_root=self.facts(spec.name).is_root, wal=self.stack.archives_wal)

    def redis(self) -> RedisHost:
        spec = self.first("db", "Redis")
        return RedisHost(self.conn(spec.name), root=spec.root, listen=self.listen_address(spec),
                         port=self.settings.get("redis_port") or 6379)

    # ------------------------------------------------------------------ state on the primary host
    def _state_path(self) -> str:
        return f"{self.primary_spec().root}/state.json"

    def state(self) -> dict:
        raw = self.primary().read_bytes(self._state_path())
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def save_state(self, data: dict) -> None:
        # root is traversable (the db account reaches its data under it); what is secret inside is 0700/0600
        sh(self.primary(), 'mkdir -p "$1" && chmod 711 "$1"', self.primary_spec().root)
        self.primary().write_bytes(self._state_path(), json.dumps(data, indent=1, sort_keys=True).encode())

    def _confirm(self, section: str, name: str | None = None) -> None:
        """Mark what was just rolled out as seen healthy (an interrupted rollout stays unconfirmed, so the
        next `up` waits for it again)."""
        state = self.state()
        entry = state[section] if name is None else state[section][name]
        entry["confirmed"] = True
        self.save_state(state)

    def internal_secret(self, name: str, *, create: bool = True) -> SecretValue | None:
        path = f"{self.primary_spec().root}/internal/{name}"
        raw = self.primary().read_bytes(path)
        if raw is not None:
            return SecretValue(raw)
        if not create:
            return None
        value = pysecrets.token_urlsafe(32).encode()
        sh(self.primary(), 'mkdir -p "$1" && chmod 700 "$1"', f"{self.primary_spec().root}/internal")
        self.primary().write_bytes(path, value, mode=0o600)
        return SecretValue(value)

    # ------------------------------------------------------------------ preflight
    def check(self) -> dict:
        needs = []
        if self.stack.postgres or self.stack.redis is not None:
            needs.append("db")
        if self.media_on_hosts():
            needs.append("storage")
        for role in needs:
            self.first(role, {"db": "PostgreSQL or Redis", "storage": "an object store"}[role])
        for svc in self.stack.services.values():
            self.placement(svc)
            if svc.image and not svc.build:
                raise BadInput(f'service "{svc.name}" names a prebuilt image; {self.label} builds images on the '
                               "hosts from a build: directory (pulling from a registry is not supported yet).",
                               code="host.image_unsupported")
            if self.runtime_kind == "docker" and not (svc.build / "Dockerfile").exists():
                raise BadInput(f'service "{svc.name}": the docker runtime builds from a Dockerfile, and '
                               f"{svc.build} has none.", hint="add one, or use runtime: process.",
                               code="host.no_dockerfile")
        self._check_ports()

        def probe(name: str) -> dict:
            facts = self.facts(name).get()
            if not facts["python3"]:
                raise ProviderError(f"{name}: python3 is not installed (the supervisor and apps need it).",
                                    hint="install python3 on the host.", code="host.missing_python")
            return {"os": f"{facts['os']} {facts['os_version']}".strip(), "root": facts["uid"] == 0}

        found = on_hosts([s.name for s in self.specs], probe, parallel=self.parallel)
        if self.runtime_kind == "process":  # what the app account will run, before anything changes
            app_hosts = sorted({h for svc in self.stack.services.values() if svc.build for h in self.placement(svc)})
            rooted = [h for h in app_hosts if self.facts(h).is_root]
            found["python"] = on_hosts(rooted, self.app_python, parallel=self.parallel)
        if self.runtime_kind == "docker":
            app_hosts = sorted({h for svc in self.stack.services.values() for h in self.placement(svc)})
            found["docker"] = on_hosts(app_hosts, lambda h: self.docker(h).check(), parallel=self.parallel)
        if self.stack.postgres:
            found["postgres"] = self.postgres().check()
            major = int(found["postgres"].split()[-1].split(".")[0])
            if major != self.stack.postgres.version:
                raise ProviderError(f"{self.label}: the stack asks for PostgreSQL {self.stack.postgres.version}, "
                                    f"the db host has {major}.", code="host.postgres_version")
        if self.stack.redis is not None:
            found["redis"] = self.redis().check()
        return found

    def _check_ports(self) -> None:
        for spec in self.specs:
            taken: dict[int, str] = {}
            for svc in self.stack.services.values():
                if not svc.is_web or not spec.has(svc.role):
                    continue
                for replica in range(svc.replicas):
                    port = self.app_port(svc, replica)
                    if port in taken:
                        raise BadInput(f"{self.label}: on host {spec.name}, {svc.name}.{replica} would listen on "
                                       f"port {port}, already used by {taken[port]} (replica i listens on "
                                       "port + i).", hint="space the services' ports further apart.",
                                       code="host.port_clash")
                    taken[port] = f"{svc.name}.{replica}"

    # ------------------------------------------------------------------ lifecycle
    def observe(self) -> list[Resource]:
        state = self.state()
        out: list[Resource] = []
        if state.get("postgres"):
            pgs = state["postgres"]
            running = self.postgres().running() if self.stack.postgres else False
            wal = {"wal_archive": True} if pgs.get("wal_archive") else {}
            out.append(Resource("database", pgs["database"], {"version": pgs["version"],
                                                             "extensions": sorted(pgs.get("extensions", [])),
                                                             "running": running, **wal}, {"host": pgs.get("host")}))
        if state.get("redis"):
            running = self.redis().running() if self.stack.redis is not None else False
            out.append(Resource("cache", "redis", {"running": running}, {"host": state["redis"].get("host")}))
        for name, info in sorted(state.get("buckets", {}).items()):
            # recorded by up: an older Lifeboat's store is flat, and its files were never given to the app
            out.append(Resource("bucket", name, {"layout": info.get("layout", "flat"), "owner": info.get("owner")},
                                {"host": info.get("host")}))
        media = state.get("media")
        if media:
            status = self.runtime(media["host"]).status().get("media.0", {})
            out.append(Resource("media", "gateway", {"config": media["config"] if media.get("confirmed") else None,
                                                     "host": media["host"],
                                                     "running": status.get("state") == "running"}))
        services = state.get("services", {})
        proxy = state.get("proxy")
        if services or proxy:
            hosts = sorted({h for svc in services.values() for h in svc.get("hosts", [])} |
                           set((proxy or {}).get("hosts", [])))

            def running_programs(host: str) -> dict:
                return self.programs_status(host, services)

            statuses = on_hosts(hosts, running_programs, parallel=self.parallel)
            for name, svc in sorted(services.items()):
                up = all(statuses[h].get(f"{name}.{i}", {}).get("state") == "running"
                         for h in svc.get("hosts", []) for i in range(svc.get("replicas", 1)))
                release = svc.get("release") if svc.get("confirmed") else None
                out.append(Resource("service", name, {"release": release, "config": svc.get("config"),
                                                      "replicas": svc.get("replicas", 1),
                                                      "hosts": svc.get("hosts", []), "running": up}))
            if proxy:
                up = all(statuses[h].get("proxy.0", {}).get("state") == "running" for h in proxy.get("hosts", []))
                config = proxy.get("config") if proxy.get("confirmed") else None
                out.append(Resource("proxy", "caddy", {"config": config, "hosts": proxy.get("hosts", []),
                                                       "running": up}))
        return out

    def desired(self, resources: list[Resource], secrets: dict[str, SecretValue] | None = None) -> list[Resource]:
        out = desired_resources(self.stack, resources, lambda svc: {
            "release": self.release_of(svc), "config": self.config_id(svc, secrets), "replicas": svc.replicas,
            "hosts": self.placement(svc)}, bucket_attrs=self.bucket_attrs() if self.media_on_hosts() else None)
        if self.gateway_needed():
            out.append(Resource("media", "gateway", {"config": self.gateway_id(),
                                                     "host": self.first("storage", "an object store").name,
                                                     "running": True}))
        if self.stack.tls is not None and self.stack.web_services():
            out.append(Resource("proxy", "caddy", {"config": self.proxy_id(secrets),
                                                   "hosts": [s.name for s in self.hosts_with("web")],
                                                   "running": True}))
        return out

    def finish_destroy(self) -> None:
        def clean(name: str) -> None:
            runtime = self.runtime(name)
            runtime.stop()
            if self.runtime_kind == "docker" and any(name in self.placement(s) for s in self.stack.services.values()):
                docker = self.docker(name)
                docker.remove_all()
                docker.remove_images(list(self.stack.services))
            self.conn(name).run(["rm", "-rf", self.root(name)])

        on_hosts([s.name for s in self.specs], clean, parallel=self.parallel)

    # ------------------------------------------------------------------ database and cache
    def _clients(self) -> list[str]:
        return sorted({self.listen_address(s) for s in self.specs if s.has("web") or s.has("worker")})

    def _apply_database(self, before, after) -> None:
        pg = self.stack.postgres
        pgh = self.postgres()
        pgh.ensure(superuser=PG_SUPERUSER, superuser_password=self.internal_secret("pg_superuser").reveal(),
                   clients=self._clients(), database=pg.database, app_user=pg.user,
                   app_password=self.internal_secret("pg_app").reveal(), extensions=pg.extensions, events=self.events)
        state = self.state()
        state["postgres"] = {"database": pg.database, "user": pg.user, "version": pg.version,
                             "extensions": sorted(pg.extensions), "host": pgh.conn.host,
                             "wal_archive": pgh.wal_spool is not None}
        self.save_state(state)

    def _delete_database(self, resource) -> None:
        if self.hosts_with("db"):
            self.postgres(version=resource.attrs.get("version")).remove()
        state = self.state()
        state.pop("postgres", None)
        self.save_state(state)

    def _apply_cache(self, before, after) -> None:
        rh = self.redis()
        rh.start(self.internal_secret("redis").reveal())
        state = self.state()
        state["redis"] = {"host": rh.conn.host}
        self.save_state(state)

    def _delete_cache(self, resource) -> None:
        if self.hosts_with("db"):
            self.redis().remove()
        state = self.state()
        state.pop("redis", None)
        self.save_state(state)

    def database_url(self) -> SecretValue:
        from urllib.parse import quote

        pg = self.stack.postgres
        spec = self.first("db", "PostgreSQL")
        password = quote(self.internal_secret("pg_app").reveal_text(), safe="")
        port = self.settings.get("postgres_port") or 5432
        return SecretValue(f"postgresql://{pg.user}:{password}@{self.listen_address(spec)}:{port}/{pg.database}")

    def redis_url(self) -> SecretValue:
        from urllib.parse import quote

        spec = self.first("db", "Redis")
        password = quote(self.internal_secret("redis").reveal_text(), safe="")
        port = self.settings.get("redis_port") or 6379
        return SecretValue(f"redis://:{password}@{self.listen_address(spec)}:{port}/0")

    # ------------------------------------------------------------------ buckets
    def objects(self) -> RemoteDirectoryStore:
        spec = self.first("storage", "an object store")
        return RemoteDirectoryStore(self.conn(spec.name), f"{spec.root}/objects", file_mode=self.media_mode)

    def bucket_attrs(self) -> dict:
        """How the storage host keeps a bucket: nested paths, its files the app account's (where Lifeboat
        logs in as root: see _apply_bucket). Read from the settings only: a plan contacts no host for it."""
        account = self.settings.get("app_account") or "lifeboat-app"
        return {"layout": "nested", "owner": account if self.runtime_kind == "process" else None}

    def _apply_bucket(self, before, after) -> None:
        store = self.objects()
        store.convert_layout()  # a store of the flat layout (an older Lifeboat's) gets nested paths
        store.create_bucket(after.name)
        host = self.first("storage", "an object store").name
        account = self.app_account(host) if after.attrs.get("owner") else None  # None: not logged in as root
        if account:  # the app reads and writes media there (uploads); Lifeboat writes as root, files given to it
            self.conn(host).run(["chown", "-R", "--no-dereference", f"{account}:{account}", store.root])
            self.conn(host).run(["chmod", "-R", "u+rwX", store.bucket_dir(after.name)])
        state = self.state()
        for info in state.get("buckets", {}).values():
            info["layout"] = "nested"  # the whole store was converted
        state.setdefault("buckets", {})[after.name] = {"host": store.conn.host, "layout": "nested",
                                                      "owner": after.attrs.get("owner")}
        self.save_state(state)

    def _delete_bucket(self, resource) -> None:
        if self.hosts_with("storage"):
            self.objects().remove_bucket(resource.name)
        state = self.state()
        state.get("buckets", {}).pop(resource.name, None)
        self.save_state(state)

    # ------------------------------------------------------------------ accessors and lock
    def compute(self) -> HostCompute:
        return HostCompute(self)

    def database(self) -> HostDatabase:
        return HostDatabase(self)

    def cache(self) -> HostCache:
        return HostCache(self)

    def secrets(self) -> RemoteSecrets:
        return RemoteSecrets(self, f"{self.primary_spec().root}/secrets")

    def host_lock(self) -> HostLock:
        return HostLock(self.primary(), self.primary_spec().root, f"{self.target.name} ({self.primary_spec().name})")

    @contextmanager
    def lock(self, owner: str):
        lock = self.host_lock()
        lock.acquire(owner, " ".join(sys.argv[1:])[:200])
        try:
            yield
        finally:
            try:
                lock.release()
            except ToolkitError:
                pass

    def lock_status(self) -> dict | None:
        return self.host_lock().holder()

    def lock_release(self) -> None:
        self.host_lock().release()
