"""The ``baremetal`` provider: the stack on SSH hosts (rented servers, a colocated rack, a friend's box).

Hosts are listed under the target with roles:

- ``web``: every web service runs ``replicas`` processes on every web host (replica i on port + i);
- ``worker``: every worker service runs on every worker host;
- ``db``: PostgreSQL and Redis (native, owned by Lifeboat) on the first db host;
- ``storage``: the object store (a directory, SFTP streams, checksums on the host) on the first storage
  host. Apps read ``BUCKET_<NAME>_URL`` (file://) on hosts that also have the storage role.

Runtime: ``process`` (Lifeboat's supervisor, uploaded to each host). The first host is the primary: it
holds the lock, the provider's state file and the secret store (0600 files under ``<root>``).
Everything lives under ``root`` (default /srv/lifeboat) on each host; ``destroy`` removes it.
"""

from __future__ import annotations

from providers.common.hosts import HOST_FEATURES, HOST_SETTINGS, HostsProvider
from toolkit.transport.hosts import SSH_SETTINGS, HostSpec, SshDirectory, host_specs


class BaremetalProvider(HostsProvider):
    TYPE = "baremetal"
    DESCRIPTION = "SSH hosts you run: processes under Lifeboat's supervisor, native PostgreSQL and Redis"
    SERVICES = frozenset({"compute", "database", "cache", "objects", "secrets"})
    FEATURES = HOST_FEATURES
    SETTINGS = {**SSH_SETTINGS, **HOST_SETTINGS}

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self.specs: list[HostSpec] = host_specs(self.settings, stack.root)
        self.directory = SshDirectory(self.specs, known_hosts=self.settings.get("known_hosts"),
                                      ssh_config=self.settings.get("ssh_config"), base=stack.root,
                                      connect_timeout=self.settings.get("connect_timeout") or 10,
                                      target=target.name)
