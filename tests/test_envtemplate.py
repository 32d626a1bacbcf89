"""Env templates (toolkit/config/envtemplate.py): an app that reads its own names gets Lifeboat's values
through ``${NAME}`` in its env (and its target's), resolved only into the process environment; exec gets the
same; validation names an unknown reference (issue 23, items 3 and 7)."""

from __future__ import annotations

import json

import pytest

from toolkit.config.envtemplate import parts, render, resolve
from toolkit.errors import BadInput

from .conftest import CHIRP, run_cli


def test_render_and_parts():
    env = {"DATABASE_URL": "postgresql://app:p%40ss@10.0.0.5:5433/social", "REDIS_URL": "redis://:pw@10.0.0.6:6380/0",
           "BUCKET_MEDIA_URL": "file:///srv/lifeboat/objects/media%20x", "SECRET": "s3"}
    context = {**parts(env), **env}
    assert render("${DATABASE_URL}", context) == env["DATABASE_URL"]
    assert render("$$HOME ${DATABASE_USER}:${DATABASE_PASSWORD}@${DATABASE_HOST}:${DATABASE_PORT}/${DATABASE_NAME}",
                  context) == "$HOME app:p@ss@10.0.0.5:5433/social"
    assert render("${REDIS_URL_DB1}|${REDIS_HOST}|${REDIS_PASSWORD}", context) == "redis://:pw@10.0.0.6:6380/1|10.0.0.6|pw"
    assert render("${BUCKET_MEDIA_PATH}/cache", context) == "/srv/lifeboat/objects/media x/cache"
    assert render("a $ b $5 ${SECRET}", context) == "a $ b $5 s3"
    cloud = {"BUCKET_MEDIA_URL": "s3://takahe-cloud-media-1a2b", "BUCKET_MEDIA_ENDPOINT": "http://127.0.0.1:5123"}
    assert render("s3-insecure://${BUCKET_MEDIA_ENDPOINT_HOST}:${BUCKET_MEDIA_ENDPOINT_PORT}/${BUCKET_MEDIA_NAME}",
                  {**parts(cloud), **cloud}) == "s3-insecure://127.0.0.1:5123/takahe-cloud-media-1a2b"
    assert "BUCKET_MEDIA_NAME" not in parts(env)  # a folder has a path, not a name
    with pytest.raises(BadInput, match=r"env X refers to \$\{MISSING\}"):
        resolve({"X": "${MISSING}"}, env, where="t: service web")


STACK = f"""version: 1
name: tmpl
domain: tmpl.lifeboat.test
services:
  web:
    role: web
    build: {CHIRP}
    command: ["python", "-m", "chirp", "web"]
    port: 8000
    health: /healthz
    env:
      CHIRP_WORKERS: "1"
      APP_DATABASE: "${{DATABASE_URL}}"
      APP_BROKER: "${{REDIS_URL_DB1}}"
      APP_MEDIA_ROOT: "${{BUCKET_MEDIA_PATH}}"
      APP_SIGNING: "key=${{CHIRP_SECRET_KEY}}"
      APP_PRICE: "$$5"
    secrets: [CHIRP_SECRET_KEY]
postgres: {{version: 15, database: tmpl}}
redis: {{version: 7}}
buckets:
  media: {{}}
secrets:
  CHIRP_SECRET_KEY: {{from: generate, length: 32}}
providers:
  here:
    type: local
    state_dir: state/here
    env:
      APP_PUBLIC_URL: "http://before-dns.example:${{PORT}}"
"""


def test_a_service_and_exec_get_the_resolved_values_and_the_plan_keeps_templates(tmp_path):
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(STACK)
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "here")
        assert up.code == 0, up
        shown = run_cli("-c", str(stack), "exec", "--on", "here", "web", "--", "python", "-c",
                        "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('APP_') "
                        "or k in ('DATABASE_URL', 'REDIS_URL', 'BUCKET_MEDIA_URL', 'CHIRP_SECRET_KEY', 'PORT')}))")
        assert shown.code == 0, shown
        env = json.loads(shown.stdout.strip().splitlines()[-1])
        assert env["APP_DATABASE"] == env["DATABASE_URL"] and env["DATABASE_URL"].startswith("postgresql://")
        assert env["APP_BROKER"] == env["REDIS_URL"][:-2] + "/1"
        assert env["APP_MEDIA_ROOT"] == str(tmp_path / "state/here/objects/media")
        assert env["APP_SIGNING"] == "key=" + env["CHIRP_SECRET_KEY"] and len(env["CHIRP_SECRET_KEY"]) >= 32
        assert env["APP_PRICE"] == "$5"
        assert env["APP_PUBLIC_URL"].startswith("http://before-dns.example:") and "${" not in env["APP_PUBLIC_URL"]
        # nothing resolved is written where the stack's own files are read: the plan shows no secret
        plan = run_cli(*lb, "plan", "--on", "here")
        assert plan.code == 0, plan
        assert env["CHIRP_SECRET_KEY"] not in plan.stdout and env["DATABASE_URL"] not in plan.stdout
    finally:
        run_cli(*lb, "destroy", "--on", "here")
