"""Env templates: a service's ``env:`` values (and a target's) may say ``${NAME}`` for what Lifeboat gives the
service and for its secrets, so an app that reads its own names gets them without a wrapper script:

    env:
      TAKAHE_DATABASE_SERVER: "${DATABASE_URL}"
      TAKAHE_MEDIA_ROOT: "${BUCKET_MEDIA_PATH}"
      CELERY_BROKER_URL: "${REDIS_URL_DB1}"

``$$`` is a literal ``$``; any other ``$`` is kept as it is. A value is resolved only into the process's
environment (``up``, every runtime, ``exec``): the stack file, the plan and the state keep the template.
Besides the variables a service is given (docs/app-contract.md), templates may use parts of them:
``DATABASE_HOST``, ``DATABASE_PORT``, ``DATABASE_NAME``, ``DATABASE_USER``, ``DATABASE_PASSWORD``;
``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_PASSWORD``, ``REDIS_URL_DB0`` ... ``REDIS_URL_DB15`` (the same
server, another database); ``BUCKET_<NAME>_PATH`` (the folder of a ``file://`` bucket);
``BUCKET_<NAME>_NAME`` (the bucket's real name at a cloud store: ``s3://``, ``gs://``, ``az://``);
``BUCKET_<NAME>_ENDPOINT_HOST`` and ``_ENDPOINT_PORT`` (of an S3 endpoint)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
PARTS = ("DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD", "REDIS_HOST",
         "REDIS_PORT", "REDIS_PASSWORD")
REDIS_DB = re.compile(r"REDIS_URL_DB([0-9]|1[0-5])")
CLOUD_SCHEMES = ("s3", "gs", "az")  # a bucket URL whose host part is the bucket's name there
BUCKET_VAR = re.compile(r"BUCKET_[A-Z0-9_]+_(URL|PATH|TOKEN|ENDPOINT|REGION|ACCESS_KEY_ID|SECRET_ACCESS_KEY|[A-Z_]+)")


def references(value: str) -> list[str]:
    """The names ``value`` refers to, in order."""
    return [m.group(1) for m in REFERENCE.finditer(value) if m.group(1)]


def given(name: str, lifeboat_names: tuple[str, ...]) -> bool:
    """Whether ``name`` is something Lifeboat gives every service (or a part of one), whatever the target."""
    return (name in lifeboat_names or name in PARTS or bool(REDIS_DB.fullmatch(name))
            or bool(BUCKET_VAR.fullmatch(name)))


def parts(env: dict[str, str]) -> dict[str, str]:
    """The parts of Lifeboat's variables that templates may use (those whose whole is in ``env``)."""
    out: dict[str, str] = {}
    if env.get("DATABASE_URL"):
        url = urlsplit(env["DATABASE_URL"])
        out.update(DATABASE_HOST=url.hostname or "", DATABASE_PORT=str(url.port or 5432),
                   DATABASE_NAME=unquote(url.path.lstrip("/")), DATABASE_USER=unquote(url.username or ""),
                   DATABASE_PASSWORD=unquote(url.password or ""))
    if env.get("REDIS_URL"):
        url = urlsplit(env["REDIS_URL"])
        out.update(REDIS_HOST=url.hostname or "", REDIS_PORT=str(url.port or 6379),
                   REDIS_PASSWORD=unquote(url.password or ""))
        for db in range(16):
            out[f"REDIS_URL_DB{db}"] = urlunsplit((url.scheme, url.netloc, f"/{db}", url.query, ""))
    for name, value in env.items():
        if name.startswith("BUCKET_") and name.endswith("_URL") and value.startswith("file://"):
            out[name[:-4] + "_PATH"] = unquote(urlsplit(value).path)
        if name.startswith("BUCKET_") and name.endswith("_URL") and value.split("://", 1)[0] in CLOUD_SCHEMES:
            out[name[:-4] + "_NAME"] = urlsplit(value).netloc
        if name.startswith("BUCKET_") and name.endswith("_ENDPOINT") and "://" in value:
            url = urlsplit(value)
            out[name + "_HOST"] = url.hostname or ""
            out[name + "_PORT"] = str(url.port or (443 if url.scheme == "https" else 80))
    return out


def render(value: str, context: dict[str, str]) -> str:
    """``value`` with each ``${NAME}`` replaced from ``context`` (KeyError naming one that is not there)."""
    def one(match: re.Match) -> str:
        if match.group(1) is None:
            return "$"
        return context[match.group(1)]

    return REFERENCE.sub(one, value)


def resolve(templates: dict[str, str], env: dict[str, str], *, where: str) -> dict[str, str]:
    """``templates`` (a service's env, then its target's) resolved against ``env`` (Lifeboat's variables and
    the service's secrets) and the parts of them."""
    from toolkit.errors import BadInput

    context = {**parts(env), **env}
    out = {}
    for name, value in templates.items():
        try:
            out[name] = render(str(value), context)
        except KeyError as exc:
            raise BadInput(f"{where}: env {name} refers to ${{{exc.args[0]}}}, which this target does not give "
                           "the service.", hint="see README 'Env templates' for what a template may use.",
                           code="stack.env_template") from None
    return out
