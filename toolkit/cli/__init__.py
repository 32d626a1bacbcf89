"""The ``lifeboat`` command line: a thin layer over the engine.

Every command prints one JSON envelope on stdout with ``--output json`` (also on failure) and human text
on stderr otherwise; exit codes are documented in the README and in ``toolkit.errors``. Heavy libraries
(boto3, paramiko, python_terraform, psycopg) are imported only by the code that needs them.

Modules: app (the session, the shared options, the group, error reporting and exit codes), output (the
envelope and the human renderer), and one module per command group: stack, moves, backups, secrets, targets.
"""

from toolkit.cli import backups, moves, secrets, stack, targets  # noqa: F401 - each registers its commands
from toolkit.cli.app import cli, entry, main, run

__all__ = ["cli", "entry", "main", "run"]
