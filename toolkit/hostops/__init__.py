"""Operations on one host through a :class:`toolkit.transport.connection.Connection`: PostgreSQL, Redis, the
process supervisor, app releases, a lock, and running work on many hosts at once.

Every command is an argv list; shell snippets are constant strings that receive their values as
positional arguments ("$1"), never pasted in. Secrets travel in 0600 files or on stdin.

Modules: shell (snippets, quoting), many (work on many hosts), bootstrap (facts, packages, accounts,
leftover processes), postgres, redis, releases, runtime (supervisor, systemd), lock, docker.
"""
