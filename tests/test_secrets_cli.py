"""`lifeboat secrets list|set|rm` (issue 24): a from: store secret is written from stdin or a file (never
argv) into the target's store, on this machine and on an SSH host; `list` names each secret's source and when
it was written, never a value; what cannot be set (a secret the operator's environment gives, the backup key,
a misspelt name) is refused with exit 2 and nothing changed."""

from __future__ import annotations

import pytest

from .conftest import baremetal_target, chirp_stack, make_host_roots, run_cli

SECRETS = ("  CHIRP_SECRET_KEY: {from: generate, length: 48}\n"
           "  SMTP_PASSWORD: {from: store}\n"
           "  API_TOKEN: {from: env, var: LB_TEST_API_TOKEN}\n"
           "  BACKUP_KEY: {from: env, var: LB_TEST_SECRETS_BACKUP_KEY}\n")


@pytest.fixture(params=["here", "colo"])
def where(request, tmp_path):
    """A stack whose target is local, or bare metal on the lab's SSH hosts (nothing deployed: the secret
    stores need no `up`)."""
    roots = None
    extra = ""
    if request.param == "colo":
        roots = make_host_roots()
        extra = baremetal_target(request.getfixturevalue("ssh_lab"), roots, roles=(("web", "worker", "db", "storage"),),
                                 pg_port=5491, redis_port=6491)
    stack = chirp_stack(tmp_path, secrets=SECRETS, extra_target=extra, dns=False)
    stack.write_text(stack.read_text() + "backup: {to: here, encrypt_with: BACKUP_KEY}\n")
    yield stack, request.param
    if roots is not None:
        import shutil

        shutil.rmtree(roots, ignore_errors=True)


def test_a_store_secret_is_set_listed_and_removed(where):
    stack, on = where
    lb = ["-c", str(stack), "-o", "json"]
    env = {"LB_TEST_API_TOKEN": "from the operator", "LB_TEST_SECRETS_BACKUP_KEY": "sealing key"}
    plan = run_cli(*lb, "plan", "--on", on, env=env)
    assert plan.code == 2 and plan.envelope["errors"][0]["code"] == "secret.missing", plan

    value = "p@ss word with spaces ✓"
    done = run_cli(*lb, "secrets", "set", "--on", on, "SMTP_PASSWORD", input=value + "\n", env=env)
    assert done.code == 0 and done.envelope["data"]["replaced"] is False, done
    assert value not in done.stdout + done.stderr
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    store = Engine(stackfile.load(stack)).provider(on).secrets()
    assert store.read("SMTP_PASSWORD").reveal_text() == value  # one trailing newline dropped, nothing else
    assert run_cli(*lb, "plan", "--on", on, env=env).code == 0

    listed = run_cli(*lb, "secrets", "list", "--on", on, env=env)
    assert listed.code == 0 and value not in listed.stdout, listed
    rows = {r["name"]: r for r in listed.envelope["data"]["secrets"]}
    assert "BACKUP_KEY" not in rows  # the operator's, never a target's
    assert rows["SMTP_PASSWORD"]["source"] == "store" and rows["SMTP_PASSWORD"]["stored"]
    assert 0 <= rows["SMTP_PASSWORD"]["written"]["age_seconds"] < 600, rows
    assert rows["API_TOKEN"] == {"name": "API_TOKEN", "source": "env", "stored": False, "written": None}
    human = run_cli("-c", str(stack), "secrets", "list", "--on", on, env=env)
    assert "SMTP_PASSWORD" in human.stderr and "kept in the target's store" in human.stderr, human

    secret_file = stack.parent / "rotated"
    secret_file.write_bytes(b"rotated\n")
    again = run_cli(*lb, "secrets", "set", "--on", on, "CHIRP_SECRET_KEY", "--from-file", str(secret_file), env=env)
    assert again.code == 0 and again.envelope["data"]["replaced"] is False, again
    assert store.read("CHIRP_SECRET_KEY").reveal_text() == "rotated"

    for name, code in (("API_TOKEN", "secret.not_stored"), ("BACKUP_KEY", "secret.operator_only"),
                       ("SMTP_PASSWROD", "secret.unknown")):
        refused = run_cli(*lb, "secrets", "set", "--on", on, name, input="x\n", env=env)
        assert refused.code == 2 and refused.envelope["errors"][0]["code"] == code, refused
        assert store.read(name) is None
    assert 'did you mean "SMTP_PASSWORD"' in refused.envelope["errors"][0]["hint"]
    empty = run_cli(*lb, "secrets", "set", "--on", on, "SMTP_PASSWORD", input="\n", env=env)
    assert empty.code == 2 and store.read("SMTP_PASSWORD").reveal_text() == value

    asked = run_cli(*lb, "secrets", "rm", "--on", on, "SMTP_PASSWORD", env=env)  # no terminal, no --yes
    assert asked.code == 2 and store.read("SMTP_PASSWORD") is not None
    gone = run_cli(*lb, "--yes", "secrets", "rm", "--on", on, "SMTP_PASSWORD", env=env)
    assert gone.code == 0 and store.read("SMTP_PASSWORD") is None
    rows = {r["name"]: r for r in run_cli(*lb, "secrets", "list", "--on", on, env=env).envelope["data"]["secrets"]}
    assert rows["SMTP_PASSWORD"]["stored"] is False


def test_a_secret_set_reaches_the_service_at_the_next_up_and_nowhere_else(tmp_path):
    """Set from stdin, deployed by `up` (the service restarts with it), replaced, deployed again: the service
    has each value; no output, state file or process argument holds it."""
    import hashlib
    import subprocess
    import urllib.request

    from .conftest import tiny_app

    tiny_app(tmp_path)
    stack = tmp_path / "lifeboat.yml"
    stack.write_text("""version: 1
name: secretuse
domain: secretuse.lifeboat.test
services:
  web: {role: web, build: app, command: [python3, serve.py], port: 8470, health: /, secrets: [SMTP_PASSWORD]}
secrets:
  SMTP_PASSWORD: {from: store}
providers:
  here: {type: local, state_dir: state, address: 127.0.0.35}
""")
    lb = ["-c", str(stack), "-o", "json", "--yes"]

    def served() -> str:
        [web] = run_cli(*lb, "status").envelope["data"]["services"]
        with urllib.request.urlopen(web["url"] + "/env/SMTP_PASSWORD", timeout=10) as resp:  # noqa: S310
            return resp.read().decode()

    try:
        outputs = ""
        for value in ("first p@ss ✓ " + "x" * 20, "second, rotated"):
            done = run_cli(*lb, "secrets", "set", "SMTP_PASSWORD", input=value + "\n")  # the only target
            up = run_cli(*lb, "up", timeout=600)
            assert done.code == 0 and up.code == 0, (done, up)
            assert served() == hashlib.sha256(value.encode()).hexdigest()
            outputs += done.stdout + done.stderr + up.stdout + up.stderr
            argv = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            assert value not in argv and value not in outputs
        # where it is kept on purpose (the store, the processes' environment files) only the owner reads it;
        # nowhere else in the target's state (logs, state.json, releases) does it appear
        files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
        held = [p for p in files if b"second, rotated" in p.read_bytes()]
        assert held and all(p.stat().st_mode & 0o077 == 0 for p in held), [(str(p), oct(p.stat().st_mode)) for p in held]
        assert all("secrets" in p.parts or "env" in p.parts for p in held), [str(p) for p in held]
    finally:
        run_cli(*lb, "destroy")
