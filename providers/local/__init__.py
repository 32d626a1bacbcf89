"""The ``local`` provider: the whole stack on this machine, no root and no cloud account needed.

- PostgreSQL: a cluster of its own listening on 127.0.0.1, made and run by the host machinery
  (toolkit/hostops/postgres.py) over a LocalConnection, as on any host. initdb refuses to run as
  root, so when Lifeboat runs as root the cluster runs as a dedicated account (``user`` setting, default
  ``lifeboat``, created if missing) with its data under /var/lib/lifeboat/<stack>-<target>-<id>/ (the state
  directory itself stays 0700 and root's).
- Redis: a private redis-server (when installed) with a password, on 127.0.0.1 (toolkit/hostops/redis.py).
- Object store: a directory (see toolkit/stores/dirstore.py for the layout).
- Services: processes kept running by Lifeboat's supervisor (toolkit/hostops/runtime.py); a ``build:`` directory with requirements.txt
  gets its own virtualenv. Images (``image:``) need a container runtime: not offered here.
- DNS: records in a BIND zone file (toolkit/dns/zonefile.py); secrets: one 0600 file per secret.

Everything else lives under one state directory (``state_dir``, default ``.lifeboat/<target>`` next to the
stack file); ``lifeboat destroy`` stops every process and removes it.
"""

from providers.local.provider import LocalProvider

__all__ = ["LocalProvider"]
