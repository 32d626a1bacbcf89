"""What a stranger's app declares (issue 23): env templates checked at validate time, phases, singletons,
system packages (its Aptfile), dependencies from pyproject.toml, release file modes. Pure parts, no servers."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.errors import BadInput, StackFileError
from toolkit.hostops.bootstrap import app_packages
from toolkit.hostops.builds import release_id, requirements_of
from toolkit.hostops.releases import tar_directory

BASE = """version: 1
name: shape
domain: shape.lifeboat.test
services:
  web:
    role: web
    build: app
    command: ["gunicorn", "app:app"]
    port: 8000
{extra}
postgres: {{version: 15, database: shape}}
redis: {{version: 7}}
secrets:
  KEY: {{from: generate}}
providers:
  here:
    type: local
{target}"""


def load(tmp_path: Path, extra: str, target: str = ""):
    (tmp_path / "app").mkdir(exist_ok=True)
    path = tmp_path / "lifeboat.yml"
    path.write_text(BASE.format(extra=extra, target=target))
    return stackfile.load(path)


def problems(tmp_path: Path, extra: str, target: str = "") -> list[tuple[str, str]]:
    with pytest.raises(StackFileError) as info:
        load(tmp_path, extra, target)
    return [(p.key, p.message) for p in info.value.problems]


def test_templates_are_checked_with_file_line_and_key(tmp_path):
    stack = load(tmp_path, '    env: {A: "${DATABASE_URL}", B: "${REDIS_URL_DB3}", C: "$${HOME}", D: "${KEY}"}\n'
                           "    secrets: [KEY]")
    assert stack.services["web"].env["A"] == "${DATABASE_URL}"  # the model keeps the template
    found = problems(tmp_path, '    env: {A: "${DATABSE_URL}", B: "${KEY}"}')
    assert [k for k, _ in found] == ["services.web.env.A", "services.web.env.B"]
    assert "${DATABSE_URL}" in found[0][1] and "secret the service lists" in found[1][1]
    found = problems(tmp_path, "", "    env: {MEDIA: \"${NOPE}\"}")
    assert found[0][0] == "providers.here.env.MEDIA"


def test_phases_singleton_and_their_checks(tmp_path):
    stack = load(tmp_path, '    release: "python manage.py migrate"\n'
                           "    build_command: [python, manage.py, collectstatic, --noinput]\n"
                           "    health_timeout: 600\n    singleton: true")
    web = stack.services["web"]
    assert web.release_command == ("python", "manage.py", "migrate") and web.health_timeout == 600
    assert web.build_command[-1] == "--noinput" and web.singleton
    before = release_id(web)
    import dataclasses

    assert release_id(dataclasses.replace(web, build_command=("true",))) != before  # the build is the release's
    found = problems(tmp_path, "    singleton: true\n    replicas: 2")
    assert found[0][0] == "services.web.replicas"


def test_aptfile_and_packages(tmp_path):
    stack = load(tmp_path, "    packages: [libmemcached-dev]")
    (tmp_path / "app" / "Aptfile").write_text("build-essential\n# a comment\n\nlibpq-dev  # trailing\nlibmemcached-dev\n")
    assert app_packages(stack.services["web"]) == ["libmemcached-dev", "build-essential", "libpq-dev"]
    (tmp_path / "app" / "Aptfile").write_text("libpq-dev\nhttps://example.com/x.deb\n")
    with pytest.raises(BadInput, match=r"Aptfile:2: 'https://example.com/x.deb'"):
        app_packages(stack.services["web"])


def test_dependencies_from_pyproject(tmp_path):
    stack = load(tmp_path, "")
    web = stack.services["web"]
    assert requirements_of(web) is None
    (tmp_path / "app" / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["django>=4.2", "celery[redis]"]\n')
    assert requirements_of(web).decode().splitlines()[1:] == ["django>=4.2", "celery[redis]"]
    (tmp_path / "app" / "requirements.txt").write_text("flask\n")
    assert requirements_of(web) == b"flask\n"  # requirements.txt first


def test_release_files_get_modes_of_their_own(tmp_path):
    app = tmp_path / "app"
    (app / "static").mkdir(parents=True)
    (app / "static" / "site.css").write_text("body {}")
    (app / "run.sh").write_text("#!/bin/sh\n")
    (app / "static").chmod(0o700)
    (app / "static" / "site.css").chmod(0o600)  # built under umask 077
    (app / "run.sh").chmod(0o700)
    buffer = io.BytesIO()
    tar_directory(app, set())(buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["./static"] == 0o755 and modes["./static/site.css"] == 0o644 and modes["./run.sh"] == 0o755
