"""Provider types by name, resolved lazily: no adapter module is imported until it is asked for.

Built-in adapters are listed here by module path only. Third parties add one through the
``lifeboat.providers`` entry-point group (``name = "package.module:Class"``), with no edit here.
"""

from __future__ import annotations

import importlib
from functools import cache

from toolkit.errors import BadInput

BUILTIN: dict[str, str] = {
    "local": "providers.local:LocalProvider",
    "baremetal": "providers.baremetal:BaremetalProvider",
    "aws": "providers.aws:AwsProvider",
    "rfc2136": "providers.rfc2136:Rfc2136Provider",
    "digitalocean-dns": "providers.clouddns:DigitalOceanDnsProvider",
    "hetzner-dns": "providers.clouddns:HetznerDnsProvider",
    "s3": "providers.s3:S3CompatibleProvider",
    "azure-blob": "providers.azureblob:AzureBlobProvider",
    "gcs": "providers.gcs:GcsProvider",
    "terraform": "providers.tfmodule:TerraformModuleProvider",
    "existing": "providers.existing:ExistingProvider",
}


@cache
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group="lifeboat.providers"):
        found.setdefault(ep.name, ep.value)
    return found


def table() -> dict[str, str]:
    merged = dict(_entry_points())
    merged.update(BUILTIN)  # built-in names cannot be shadowed by a plugin
    return merged


def names() -> list[str]:
    return sorted(table())


def known(kind: str) -> bool:
    """Whether a type name resolves; built-in names answer without scanning installed plugins."""
    return kind in BUILTIN or kind in table()


@cache
def load(kind: str):
    """The provider class for a type name."""
    spec = BUILTIN.get(kind) or table().get(kind)
    if spec is None:
        raise BadInput(f'unknown provider type "{kind}".', hint=f"known types: {', '.join(names())}.",
                       code="provider.unknown")
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def settings_spec(kind: str) -> dict:
    return load(kind).SETTINGS


def settings_check(kind: str):
    """The provider's cross-field check of its settings (``check_settings(settings, where, report, raw)``), if any."""
    return getattr(load(kind), "check_settings", None)


def services_of(kind: str) -> frozenset[str]:
    return load(kind).SERVICES
