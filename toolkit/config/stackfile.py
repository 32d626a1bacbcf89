"""Load and validate ``lifeboat.yml`` into a :class:`toolkit.config.model.Stack`.

Every problem names the file, the line, the key path and what was expected; unknown keys get the
closest known key. Loading never changes anything on disk or anywhere else.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from toolkit.config import model
from toolkit.config.loader import DEFAULT_FILE, parse_yaml, read_bytes
from toolkit.config.schema import (
    MISSING,
    AnyOf,
    Bool,
    DictOf,
    Duration,
    Field,
    Int,
    ListOf,
    Map,
    Report,
    Scalar,
    Spec,
    Str,
    Where,
    closest,
    describe,
    key_line,
    value_line,
)
from toolkit.contract import registry
from toolkit.errors import Problem, StackFileError

STACK_FILE_VERSION = 1

LABEL = r"[a-z][a-z0-9-]{0,62}"
IDENT = r"[a-z_][a-z0-9_]{0,62}"
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
SECRET_NAME = r"[A-Z][A-Z0-9_]{0,127}"
DOMAIN = r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]"
EMAIL = r"[^@\s]+@" + DOMAIN
BUCKET = r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"
RECORD_NAME = r"@|\*|(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*"

# Names Lifeboat sets in every service's environment; a stack must not set them itself.
INJECTED_ENV = ("DATABASE_URL", "REDIS_URL", "PORT", "LIFEBOAT_BIND", "LIFEBOAT_STACK", "LIFEBOAT_SERVICE",
                "LIFEBOAT_REPLICA")
INJECTED_PREFIX = "BUCKET_"


class Command(Spec):
    """An argv list, or a string split the way a POSIX shell would (no shell runs it)."""

    expected = 'a command: a list of arguments, or a string such as "gunicorn app:app"'

    def check(self, value, where, report):
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                report.add(where, f"cannot split the command into arguments ({exc}).",
                           "use a list of arguments, e.g. [\"python\", \"-m\", \"app\"].")
                return MISSING
        elif isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
            argv = [str(v) for v in value]
        else:
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        if not argv:
            report.add(where, f"expected {self.expected}, got an empty command.")
            return MISSING
        return tuple(argv)


def _service_checks(svc: dict, where: Where, report: Report, raw: Any) -> None:
    if (svc["image"] is None) == (svc["build"] is None):
        report.add(where, 'needs exactly one of "image" (a container image) or "build" (a directory to build from).')
    if svc["build_command"] is not None and svc["build"] is None:
        report.add(where.child("build_command", key_line(raw, "build_command")),
                   "runs in the release built from build:, and this service has none (it runs an image).",
                   "build the image with it instead, or give the service a build: folder.")
    if svc["singleton"] and svc["replicas"] != 1:
        report.add(where.child("replicas", key_line(raw, "replicas")),
                   f"a singleton runs once across the target; replicas: {svc['replicas']} says otherwise.",
                   "remove replicas:, or singleton:.")
    if svc["writable"] and svc["build"] is None:
        report.add(where.child("writable", key_line(raw, "writable")), "names folders of the release built from "
                   "build:, and this service has none (it runs an image).", "make them writable in the image.")
    if svc["serve"] and svc["role"] != "web":
        report.add(where.child("serve", key_line(raw, "serve")), "a worker serves no HTTP: only a web service's "
                   "proxy serves paths.", "move serve: to the web service.")
    for prefix, what in svc["serve"].items():
        at = where.child("serve", key_line(raw, "serve")).child(prefix, key_line(raw.get("serve"), prefix))
        if prefix.strip("/") == "" or ".." in prefix.split("/") or "." in prefix.split("/"):
            report.add(at, "a served path is a prefix below / (such as /static/): / itself would take every "
                       "request from the app, and . or .. are not path segments here.")
        if isinstance(what, str) and svc["build"] is None:
            report.add(at, "serves a folder of the release, and this service has none (it runs an image).",
                       "serve it from a bucket, or give the service a build: folder.")
    if svc["role"] == "web" and svc["port"] is None:
        report.add(where, 'a web service needs "port": the port the app listens on.')
    if svc["role"] == "worker" and svc["health"] is not None:
        report.add(where.child("health", key_line(raw, "health")),
                   "a worker serves no HTTP, so it has no health check path.",
                   "remove health, or make the service role: web.")
    for name in svc["env"]:
        if name in INJECTED_ENV or name.startswith(INJECTED_PREFIX):
            env_raw = raw.get("env")
            report.add(where.child("env", value_line(raw, "env")).child(name, key_line(env_raw, name)),
                       "is set by Lifeboat for every service and cannot be set here.",
                       "give it to the app under the name it reads: NAME: \"${" + name + "}\" "
                       "(README 'Env templates').")
    check_templates(svc["env"], set(svc["secrets"]), where, report, raw,
                    "a secret the service lists under secrets:")


def check_templates(env: dict, secrets: set[str], where: Where, report: Report, raw: Any, whose: str) -> None:
    """Every ``${NAME}`` in ``env`` names what Lifeboat gives a service, or one of ``secrets``."""
    from toolkit.config.envtemplate import given, references

    env_raw = raw.get("env") if isinstance(raw, dict) else None
    for name, value in env.items():
        for ref in references(str(value)):
            if not given(ref, INJECTED_ENV) and ref not in secrets:
                report.add(where.child("env", value_line(raw, "env")).child(name, key_line(env_raw, name)),
                           f"refers to ${{{ref}}}, which is neither what Lifeboat gives a service nor {whose}.",
                           "templates may use DATABASE_URL, REDIS_URL, PORT, LIFEBOAT_*, BUCKET_<NAME>_*, their "
                           "parts (DATABASE_HOST..., REDIS_URL_DB1..., BUCKET_<NAME>_PATH) and the service's "
                           "secrets; write $$ for a literal $.")


ENV = DictOf(Scalar(), name=Str(pattern=ENV_NAME, expected="an environment variable name"))
TARGET_ENV = Field(ENV, default=dict, doc="env of every service on this target (templates allowed), over the "
                                          "services' own: values that differ per target, such as a media URL")

SERVE_PATH = r"/([A-Za-z0-9._~!$&'()+,;=:@-]+/)*[A-Za-z0-9._~!$&'()+,;=:@-]*"
RELEASE_FOLDER = r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*"
SERVED = AnyOf((lambda v: isinstance(v, str), Str(pattern=RELEASE_FOLDER, expected="a folder of the release "
                                                  "(a relative path, no ..)")),
               (lambda v: isinstance(v, dict), Map({
                   "bucket": Field(Str(pattern=BUCKET, expected="a bucket of the stack"), required=True),
                   "prefix": Field(Str(pattern=RELEASE_FOLDER + "/", expected='a key prefix such as "attachments/"'),
                                   doc="the keys under the path begin with it (an app whose URLs put whole keys "
                                       "at the root of its media host)")})),
               expected='a folder of the release ("static") or {bucket: NAME}')

SERVICE = Map(
    {
        "role": Field(Str(choices=["web", "worker"]), required=True),
        "image": Field(Str(expected="a container image reference")),
        "build": Field(Str(expected="a directory relative to the stack file")),
        "command": Field(Command(), required=True),
        "port": Field(Int(min=1, max=65535, expected="a TCP port from 1 to 65535")),
        "env": Field(ENV, default=dict, doc='the app\'s environment; values may use ${NAME} templates '
                                              '(README "Env templates")'),
        "replicas": Field(Int(min=1, max=100), default=1),
        "health": Field(Str(pattern=r"/[^\s]*", expected='an HTTP path starting with "/"')),
        "path": Field(Str(pattern=r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*", expected='a URL path prefix such as '
                                                                        '"/api/v1/streaming"'),
                      doc="web: the proxy sends requests under this prefix to this service"),
        "secrets": Field(ListOf(Str(pattern=SECRET_NAME, expected="a secret name"), unique=True), default=list),
        "release": Field(Command(), doc="run once per new release, on one host, with its environment, before any "
                                        "replica of it takes traffic (database migrations); a failure stops the "
                                        "rollout with the previous release serving"),
        "build_command": Field(Command(), doc="run when a release is built, in its folder, with its environment "
                                              "(collectstatic, compiling assets); what it writes is part of the "
                                              "release (the key build: names the folder). Services built from "
                                              "the same folder share it unless they give their own"),
        "packages": Field(ListOf(Str(pattern=r"[a-z0-9][a-z0-9+.-]+", expected="a Debian package name"),
                                 unique=True), default=list,
                          doc="system packages the service needs on the hosts that run it (an Aptfile in its "
                              "build folder counts too); `hosts bootstrap` installs them"),
        "singleton": Field(Bool(), default=False,
                           doc="runs exactly once across the target (a scheduler such as Celery beat): one "
                               "replica, on the first host of its role"),
        "health_timeout": Field(Int(min=5, max=7200, expected="seconds from 5 to 7200"),
                                doc="how long a new release may take to become healthy (default 60 s on local, "
                                    "90 s on hosts)"),
        "writable": Field(ListOf(Str(pattern=RELEASE_FOLDER, expected="a folder of the release (a relative path, "
                                                                      "no ..)"), unique=True), default=list,
                          doc="folders of the release the app may write, made if missing and given to the app "
                              "account (Rails writes tmp/pids and log/); the rest of the release is read only "
                              "to it. Each release has its own"),
        "serve": Field(DictOf(SERVED, name=Str(pattern=SERVE_PATH, expected='a URL path prefix such as "/static/"')),
                       default=dict,
                       doc="web: paths the TLS proxy serves itself, as a web server in front of an app does: a "
                           "folder of the release (\"/static/\": static) or a bucket's objects by key "
                           "(\"/media/\": {bucket: media}); GET and HEAD only"),
    },
    expected="a service (role, command, image or build, ...)",
    validate=_service_checks,
)


def _postgres_default_user(pg: dict, where: Where, report: Report, raw: Any) -> None:
    if pg["user"] is None:
        pg["user"] = pg["database"]


POSTGRES = Map(
    {
        "version": Field(Int(min=12, max=18, expected="a PostgreSQL major version from 12 to 18"), required=True),
        "database": Field(Str(pattern=IDENT, expected="a database name (lowercase letters, digits, _)"),
                          required=True),
        "user": Field(Str(pattern=IDENT, expected="a role name (lowercase letters, digits, _)")),
        "extensions": Field(ListOf(Str(pattern=IDENT, expected="an extension name"), unique=True), default=list),
    },
    validate=_postgres_default_user,
)

REDIS = Map(
    {
        "version": Field(Int(min=5, max=8, expected="a Redis major version from 5 to 8")),
        "disposable": Field(Bool(), default=False, doc="true: the cache is not carried over on migrate"),
    }
)

BUCKET_SETTINGS = Map({"public": Field(Bool(), default=False), "versioned": Field(Bool(), default=False)})
BUCKET_SPEC = AnyOf((lambda v: v is None, Map({})), (lambda v: isinstance(v, dict), BUCKET_SETTINGS),
                    expected="a mapping of bucket settings (public, versioned) or nothing")


def _tls_checks(tls: dict, where: Where, report: Report, raw: Any) -> None:
    acme = tls["acme_email"] is not None
    cert = tls["certificate_secret"] is not None
    if acme == cert:
        report.add(where, 'needs exactly one of "acme_email" (certificates from ACME) or "certificate_secret" '
                          '(a certificate you provide, with "key_secret").')
    if cert and tls["key_secret"] is None:
        report.add(where, '"certificate_secret" needs "key_secret", the secret holding the private key.')


TLS = Map(
    {
        "acme_email": Field(Str(pattern=EMAIL, expected="an e-mail address for the ACME account")),
        "certificate_secret": Field(Str(pattern=SECRET_NAME, expected="a secret name")),
        "key_secret": Field(Str(pattern=SECRET_NAME, expected="a secret name")),
    },
    validate=_tls_checks,
)


def _secret_checks(ref: dict, where: Where, report: Report, raw: Any) -> None:
    source = ref["from"]
    if source == "file" and ref["path"] is None:
        report.add(where, 'a secret "from: file" needs "path", the file holding the value.')
    if source != "file" and ref["path"] is not None:
        report.add(where.child("path", key_line(raw, "path")), f'"path" only applies to "from: file", not "{source}".')
    if source != "env" and ref["var"] is not None:
        report.add(where.child("var", key_line(raw, "var")), f'"var" only applies to "from: env", not "{source}".')


SECRET = Map(
    {
        "from": Field(Str(choices=["env", "file", "store", "generate"]), required=True),
        "var": Field(Str(pattern=ENV_NAME, expected="an environment variable name")),
        "path": Field(Str(expected="a file path")),
        "length": Field(Int(min=16, max=256), default=32),
    },
    forbidden={
        "value": "secret values never live in the stack file; say where the value comes from instead "
                 "(from: env, file, store or generate).",
    },
    validate=_secret_checks,
)


class TargetSpec(Spec):
    """A ``providers:`` entry: ``type`` picks the provider, whose own settings spec checks the rest."""

    expected = "a provider target (type and its settings)"

    def check(self, value, where, report):
        if not isinstance(value, dict):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        if "type" not in value:
            report.add(where, f'missing required key "type" (one of {", ".join(registry.names())}).')
            for key in value:  # a misspelt "type" is named too, at its own line
                if isinstance(key, str) and closest(key, ["type"]):
                    report.add(where.child(key, key_line(value, key)), f'unknown key "{key}".',
                               'did you mean "type"?')
            return MISSING
        kind = value["type"]
        if not isinstance(kind, str) or not registry.known(kind):
            names = registry.names()
            near = closest(str(kind), names) if isinstance(kind, str) else None
            hint = f'did you mean "{near}"?' if near else "`lifeboat providers` lists them."
            report.add(where.child("type", value_line(value, "type")),
                       f"expected a provider type, one of {', '.join(names)}; got {describe(kind)}.", hint)
            return MISSING
        try:
            settings = registry.settings_spec(kind)
        except Exception as exc:  # a broken third-party provider must not crash validation
            report.add(where.child("type", value_line(value, "type")),
                       f'provider type "{kind}" could not be loaded ({exc}).')
            return MISSING
        fields = {"type": Field(Str(), required=True), "env": TARGET_ENV, **settings}
        checked = Map(fields, expected=self.expected, validate=registry.settings_check(kind)).check(value, where, report)
        return checked


DNS_RECORD = Map(
    {
        "name": Field(Str(pattern=RECORD_NAME, expected='a record name relative to the zone ("@", "www", ...)'),
                      required=True),
        "type": Field(Str(choices=["A", "AAAA", "CNAME", "TXT", "MX", "CAA"]), required=True),
        "ttl": Field(Int(min=1, max=604800, expected="a TTL in seconds from 1 to 604800")),
        "values": Field(ListOf(Str(expected="a record value"), min_items=1, allow_scalar=True)),
        "target": Field(Str(choices=["web", "worker"], expected='a service role whose addresses are used ("web")')),
    }
)


def _record_checks(dns: dict, where: Where, report: Report, raw: Any) -> None:
    seen = {}
    raw_records = raw.get("records") or []
    for index, record in enumerate(dns["records"]):
        rwhere = Where(f"{where.path}.records[{index}]", _item_line(raw_records, index))
        if (record["values"] is None) == (record["target"] is None):
            report.add(rwhere, 'needs exactly one of "values" (fixed values) or "target" (a service role).')
        if record["target"] is not None and record["type"] not in ("A", "AAAA"):
            report.add(rwhere, f'"target" fills in host addresses, so the type must be A or AAAA, not {record["type"]}.')
        key = (record["name"], record["type"])
        if key in seen:
            report.add(rwhere, f'record {record["name"]} {record["type"]} is already defined at records[{seen[key]}].',
                       "list several values under one record instead.")
        seen.setdefault(key, index)


def _item_line(seq: Any, index: int) -> int | None:
    try:
        return seq.lc.item(index)[0] + 1
    except Exception:
        return None


DNS = Map(
    {
        "provider": Field(Str(pattern=LABEL, expected="the name of a target under providers:"), required=True),
        "zone": Field(Str(pattern=DOMAIN, expected="a DNS zone such as example.com"), required=True),
        "ttl": Field(Int(min=1, max=604800, expected="a TTL in seconds from 1 to 604800"), default=300),
        "cutover_ttl": Field(Int(min=1, max=86400, expected="a TTL in seconds from 1 to 86400"), default=60,
                             doc="a migration lowers the records to this TTL first and switches them with it"),
        "records": Field(ListOf(DNS_RECORD), default=list),
    },
    validate=_record_checks,
)

BACKUP = Map(
    {
        "to": Field(Str(pattern=LABEL, expected="the name of a target under providers:"), required=True),
        "every": Field(Duration(min_seconds=60), default=3600),
        "keep": Field(Int(min=1, max=10000), default=24),
        "encrypt_with": Field(Str(pattern=SECRET_NAME, expected="a secret name (the key you hold)")),
        "bucket": Field(Str(pattern=BUCKET, expected="a bucket name (3-63 lowercase letters, digits, -)"),
                        doc="the bucket of the backup target's object store that holds the backups"),
        "wal": Field(Bool(), default=False,
                     doc="also archive PostgreSQL's write-ahead log where Lifeboat runs PostgreSQL (a base backup "
                         "with each backup, segments shipped by `lifeboat backup --wal-only`): a failover replays "
                         "it, so the data lost is minutes, not the time since the last backup"),
    }
)


def _stack_checks(top: dict, where: Where, report: Report, raw: Any) -> None:
    def at(*keys: Any) -> Where:
        node, w = raw, Where("", None)
        for k in keys:
            line = key_line(node, k) if isinstance(node, dict) else _item_line(node, k)
            w = w.child(k, line)
            node = node[k]
        return w

    default = top.get("default_target")
    if default and default not in top["providers"]:
        near = closest(default, list(top["providers"]))
        report.add(at("default_target"), f'"{default}" is not a target of providers: '
                   f'({", ".join(top["providers"])}).', f'did you mean "{near}"?' if near else None)
    if top["version"] != STACK_FILE_VERSION:
        report.add(at("version"), f"this Lifeboat reads stack files of version {STACK_FILE_VERSION}, "
                                  f"got {top['version']}.", "upgrade Lifeboat, or write the file for version 1.")
    declared = top["secrets"]
    for sname, svc in top["services"].items():
        for index, secret in enumerate(svc["secrets"]):
            if secret not in declared:
                near = closest(secret, list(declared))
                report.add(at("services", sname, "secrets", index), f'secret "{secret}" is not declared under secrets:.',
                           f'did you mean "{near}"?' if near else "declare it under secrets: with where its value comes from.")
    paths: dict[str, str] = {}
    for sname, svc in top["services"].items():
        for prefix, what in svc["serve"].items():
            if isinstance(what, dict) and what["bucket"] not in top["buckets"]:
                report.add(at("services", sname, "serve", prefix), f'bucket "{what["bucket"]}" is not one of the '
                           "stack's buckets:.", f"buckets: {', '.join(top['buckets']) or 'none'}.")
            normal = prefix.rstrip("/") + "/"
            if normal in paths:
                report.add(at("services", sname, "serve", prefix), f"{prefix} is served twice (also as "
                           f"{paths[normal]}).")
            paths[normal] = f"{prefix} of {sname}"
    tls = top["tls"]
    if tls:
        for key in ("certificate_secret", "key_secret"):
            if tls[key] and tls[key] not in declared:
                report.add(at("tls", key), f'secret "{tls[key]}" is not declared under secrets:.')
    targets = top["providers"]
    for tname, target in targets.items():
        if target.get("env"):
            check_templates(target["env"], set(declared), at("providers", tname), report, raw["providers"][tname],
                            "a secret declared under secrets: (and listed by the service)")
    dns = top["dns"]
    if dns:
        if dns["provider"] not in targets:
            near = closest(dns["provider"], list(targets))
            report.add(at("dns", "provider"), f'"{dns["provider"]}" is not a target under providers:.',
                       f'did you mean "{near}"?' if near else f"targets: {', '.join(targets) or 'none'}.")
        else:
            kind = targets[dns["provider"]]["type"]
            if "dns" not in registry.services_of(kind):
                report.add(at("dns", "provider"), f'target "{dns["provider"]}" (type {kind}) offers no DNS service.',
                           "`lifeboat providers` shows which types offer dns.")
        domain, zone = top["domain"], dns["zone"]
        if domain != zone and not domain.endswith("." + zone):
            report.add(at("dns", "zone"), f'the stack\'s domain "{domain}" is not inside the zone "{zone}".')
        roles = {svc["role"] for svc in top["services"].values()}
        for index, record in enumerate(dns["records"]):
            if record["target"] and record["target"] not in roles:
                report.add(at("dns", "records", index, "target"),
                           f'no service has role "{record["target"]}".')
    backup = top["backup"]
    if backup:
        if backup["to"] not in targets:
            near = closest(backup["to"], list(targets))
            report.add(at("backup", "to"), f'"{backup["to"]}" is not a target under providers:.',
                       f'did you mean "{near}"?' if near else None)
        elif "objects" not in registry.services_of(targets[backup["to"]]["type"]):
            report.add(at("backup", "to"), f'target "{backup["to"]}" (type {targets[backup["to"]]["type"]}) offers no '
                       "object store to keep backups in.", "`lifeboat providers` shows which types offer objects.")
        key = backup["encrypt_with"]
        if key and key not in declared:
            report.add(at("backup", "encrypt_with"), f'secret "{key}" is not declared under secrets:.')
        elif key and isinstance(declared[key], dict) and declared[key]["from"] not in ("env", "file"):
            report.add(at("backup", "encrypt_with"), f'the backup key "{key}" comes from {declared[key]["from"]}: a '
                       "provider would hold it, next to the backups.",
                       "give it from: env or from: file, so only the operator holds it.")
        if backup["bucket"] and backup["bucket"] in top["buckets"]:
            report.add(at("backup", "bucket"), f'"{backup["bucket"]}" is one of the stack\'s own buckets.',
                       "backups need a bucket of their own.")


STACK = Map(
    {
        "version": Field(Int(min=1, expected="the stack file version (1)"), default=STACK_FILE_VERSION),
        "name": Field(Str(pattern=r"[a-z][a-z0-9-]{0,39}", expected="a stack name (lowercase letters, digits, -; "
                                                                     "at most 40)"), required=True),
        "domain": Field(Str(pattern=DOMAIN, expected="a domain name such as social.example.com"), required=True),
        "services": Field(DictOf(SERVICE, name=Str(pattern=LABEL, expected="a service name (lowercase letters, "
                                                                             "digits, -)"), min_items=1),
                          required=True),
        "postgres": Field(POSTGRES),
        "redis": Field(AnyOf((lambda v: v is None, Map({})), (lambda v: isinstance(v, dict), REDIS),
                             expected="Redis settings (version, disposable) or nothing")),
        "buckets": Field(DictOf(BUCKET_SPEC, name=Str(pattern=BUCKET, expected="a bucket name (3-63 lowercase "
                                                                               "letters, digits, -)")), default=dict),
        "tls": Field(TLS),
        "secrets": Field(DictOf(SECRET, name=Str(pattern=SECRET_NAME, expected="a secret name (UPPER_CASE)")),
                         default=dict),
        "providers": Field(DictOf(TargetSpec(), name=Str(pattern=LABEL, expected="a target name (lowercase "
                                                                                 "letters, digits, -)"), min_items=1),
                           required=True),
        "dns": Field(DNS),
        "backup": Field(BACKUP),
        "default_target": Field(Str(pattern=LABEL, expected="a target name of providers:"),
                                doc="the target a command acts on without --on (LIFEBOAT_TARGET overrides it; "
                                    "with one target, that one)"),
    },
    expected="a stack (name, domain, services, providers, ...)",
    validate=_stack_checks,
)


def resolve_path(config: str | os.PathLike | None) -> Path:
    """The stack file to use: --config, then $LIFEBOAT_CONFIG, then ./lifeboat.yml."""
    chosen = config or os.environ.get("LIFEBOAT_CONFIG") or DEFAULT_FILE
    return Path(chosen)


def load(path: str | os.PathLike) -> model.Stack:
    """Read, parse and validate a stack file; raise :class:`StackFileError` listing every problem."""
    path = Path(path)
    shown = str(path)
    data = read_bytes(path, shown)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise StackFileError(shown, [Problem("stack.encoding", f"{shown}:{line}: the file is not valid UTF-8 "
                                             f"(byte {exc.start}).", file=shown, line=line)]) from None
    raw = parse_yaml(text, shown)
    report = Report(shown)
    if raw is None:
        report.add(Where("", 1), "the file is empty; expected a stack (name, domain, services, providers, ...).",
                   "run `lifeboat init` to see an annotated example.")
        raise StackFileError(shown, report.problems)
    checked = STACK.check(raw, Where("", 1), report)
    if checked is not MISSING:
        _check_paths(checked, path.resolve().parent, raw, report)
    if report.problems or checked is MISSING:
        raise StackFileError(shown, report.problems)
    return build(checked, path.resolve(), raw)


def _check_paths(top: dict, root: Path, raw: Any, report: Report) -> None:
    """Directories and files the stack names must exist (read-only checks)."""
    services_raw = raw.get("services")
    for name, svc in top["services"].items():
        if svc["build"] and not (root / svc["build"]).is_dir():
            svc_raw = services_raw[name]
            report.add(Where(f"services.{name}.build", value_line(svc_raw, "build")),
                       f'"{svc["build"]}" is not a directory (relative to {root}).',
                       "build: names the directory holding the app's source.")


def shared_build_commands(services: dict) -> dict[str, tuple[str, ...] | None]:
    """Each service's build command. Services built from one folder are one build, as a Procfile's
    processes share one slug or image: a service that gives no ``build_command`` takes the one the others
    built from its folder give (when they agree), so a worker gets the files a web service's collectstatic
    writes. (A worker without them crashed at import in a real app: issue 23.)"""
    by_folder: dict[str, set] = {}
    for s in services.values():
        if s["build"] and s["build_command"]:
            by_folder.setdefault(s["build"], set()).add(tuple(s["build_command"]))
    out = {}
    for name, s in services.items():
        given = by_folder.get(s["build"], set())
        out[name] = s["build_command"] or (next(iter(given)) if len(given) == 1 else None)
    return out


def build(top: dict, path: Path, raw: Any) -> model.Stack:
    root = path.parent
    build_commands = shared_build_commands(top["services"])
    services = {
        name: model.Service(
            name=name, role=s["role"], command=s["command"], image=s["image"],
            build=(root / s["build"]).resolve() if s["build"] else None, port=s["port"], env=dict(s["env"]),
            replicas=s["replicas"], health=s["health"], secrets=tuple(s["secrets"]), path=s["path"],
            release_command=s["release"], build_command=build_commands[name], health_timeout=s["health_timeout"],
            packages=tuple(s["packages"]), singleton=s["singleton"], writable=tuple(s["writable"]),
            serve=tuple((prefix.rstrip("/") + "/", "release", what) if isinstance(what, str) else
                        (prefix.rstrip("/") + "/", "bucket", what["bucket"] + "/" + (what.get("prefix") or ""))
                        for prefix, what in s["serve"].items()),
        )
        for name, s in top["services"].items()
    }
    pg = top["postgres"]
    postgres = model.Postgres(pg["version"], pg["database"], pg["user"], tuple(pg["extensions"])) if pg else None
    redis = None
    if "redis" in raw:
        rd = top["redis"] or {}
        redis = model.Redis(rd.get("version"), rd.get("disposable", False))
    buckets = {n: model.Bucket(n, b.get("public", False), b.get("versioned", False))
               for n, b in top["buckets"].items()}
    tls = model.Tls(**top["tls"]) if top["tls"] else None
    secrets = {
        n: model.SecretRef(n, s["from"], var=(s["var"] or n) if s["from"] == "env" else None,
                           path=(root / s["path"]).resolve() if s["path"] else None, length=s["length"])
        for n, s in top["secrets"].items()
    }
    raw_targets = raw.get("providers")
    targets = {
        n: model.Target(n, t["type"], {k: v for k, v in t.items() if k != "type"}, key_line(raw_targets, n))
        for n, t in top["providers"].items()
    }
    dns = None
    if top["dns"]:
        d = top["dns"]
        records = tuple(
            model.DnsRecord(r["name"], r["type"], r["ttl"] or d["ttl"], tuple(r["values"] or ()), r["target"])
            for r in d["records"]
        )
        dns = model.Dns(d["provider"], d["zone"], d["ttl"], records, d["cutover_ttl"])
    backup = model.Backup(**top["backup"]) if top["backup"] else None
    return model.Stack(
        name=top["name"], domain=top["domain"], path=path, services=services, postgres=postgres, redis=redis,
        buckets=buckets, tls=tls, secrets=secrets, targets=targets, dns=dns, backup=backup,
        default_target=top.get("default_target"),
    )
