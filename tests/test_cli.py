"""CLI conventions: one JSON envelope per command (also on failure), exit codes, confirmation, start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, chirp_stack, run_cli

ENVELOPE_KEYS = {"lifeboat", "command", "status", "exit_code", "data", "errors", "warnings"}


def check(result, command, code, status):
    env = result.envelope
    assert set(env) == ENVELOPE_KEYS, env
    assert env["lifeboat"] == 1 and env["command"] == command, env
    assert env["exit_code"] == code == result.code, result
    assert env["status"] == status, env
    for error in env["errors"]:
        assert {"code", "message", "hint"} <= set(error)
    if status == "error":
        assert env["errors"], env
    assert "Traceback" not in result.stderr
    return env


@pytest.fixture
def stack(tmp_path):
    return chirp_stack(tmp_path)


def test_help_is_cheap():
    code = ("import sys; from toolkit.cli import main; rc = main(['--help']); "
            "heavy = [m for m in ('boto3', 'botocore', 'paramiko', 'python_terraform', 'psycopg', 'ruamel', "
            "'rich', 'jinja2', 'dns') if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "Exit codes" in out.stdout


def test_the_command_exits_without_a_last_walk_over_its_objects():
    # The installed `lifeboat` is toolkit.cli:run: main's exit code, and whatever was made left out of
    # garbage collection (the final collections at exit would walk it all once more).
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lifeboat"] == "toolkit.cli:run"
    code = ("import gc, sys; from toolkit.cli import run; sys.argv = ['lifeboat', 'nonsense']; "
            "rc = run(); print('RC', rc, 'FROZEN', gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "RC 2 FROZEN True" in out.stdout, out.stdout + out.stderr


def test_init_writes_then_refuses_to_overwrite(tmp_path):
    target = tmp_path / "lifeboat.yml"
    env = check(run_cli("-o", "json", "init", str(target)), "init", 0, "ok")
    assert env["data"]["path"] == str(target) and target.exists()
    original = target.read_text()
    target.write_text(original + "\n# mine\n")
    check(run_cli("-o", "json", "init", str(target)), "init", 2, "error")
    assert target.read_text().endswith("# mine\n")
    check(run_cli("-o", "json", "init", str(target), "--force"), "init", 0, "ok")
    assert target.read_text() == original
    check(run_cli("-c", str(target), "-o", "json", "validate"), "validate", 0, "ok")


def test_validate_and_providers(stack):
    env = check(run_cli("-c", str(stack), "-o", "json", "validate"), "validate", 0, "ok")
    assert env["data"]["targets"] == {"here": "local"}
    env = check(run_cli("-o", "json", "providers"), "providers", 0, "ok")
    local = [p for p in env["data"]["providers"] if p["type"] == "local"][0]
    assert set(local["services"]) == {"compute", "database", "cache", "objects", "dns", "secrets"}
    assert local["features"]["tls"] is False and "state_dir" in local["settings"]


def test_plan_changes_nothing_and_detailed_exitcode(stack, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    env = check(run_cli("-c", str(stack), "-o", "json", "plan", "--on", "here"), "plan", 0, "changes")
    actions = {(c["kind"], c["name"]): c["action"] for c in env["data"]["changes"]}
    assert actions[("database", "chirp")] == "create" and actions[("service", "web")] == "create"
    assert actions[("secret", "CHIRP_SECRET_KEY")] == "create"
    check(run_cli("-c", str(stack), "-o", "json", "plan", "--on", "here", "--detailed-exitcode"), "plan", 10,
          "changes")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no state dir, nothing written


def test_options_after_the_command(stack):
    result = run_cli("plan", "--on", "here", "-c", str(stack), "-o", "json")
    check(result, "plan", 0, "changes")


def test_status_exec_destroy_when_not_deployed(stack, tmp_path):
    env = check(run_cli("-c", str(stack), "-o", "json", "status", "--on", "here"), "status", 1, "error")
    assert env["errors"][0]["code"] == "status.not_deployed" and env["data"]["deployed"] is False
    env = check(run_cli("-c", str(stack), "-o", "json", "exec", "--on", "here", "web", "--", "true"), "exec", 1,
                "error")
    assert env["errors"][0]["code"] == "local.not_deployed"
    check(run_cli("-c", str(stack), "-o", "json", "destroy", "--on", "here"), "destroy", 0, "ok")
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("args,command,code", [
    (["plan", "--on", "nowhere"], "plan", 2),              # unknown target
    (["up", "--on", "here", "--bogus"], "up", 2),          # unknown option
    (["frobnicate"], "frobnicate", 2),                     # unknown command
    (["status", "--on", "nowhere"], "status", 2),
])
def test_usage_errors_still_print_an_envelope(stack, args, command, code):
    result = run_cli("-c", str(stack), "-o", "json", *args)
    env = check(result, command, code, "error")
    assert env["errors"][0]["message"]


def test_unknown_target_names_the_targets(stack):
    env = run_cli("-c", str(stack), "-o", "json", "plan", "--on", "nowhere").envelope
    assert env["errors"][0]["code"] == "target.unknown" and "here" in env["errors"][0]["hint"]


@pytest.mark.parametrize("args", [["failover", "--to", "nowhere"], ["destroy", "--on", "nowhere"],
                                  ["migrate", "--from", "here", "--to", "nowhere"], ["lock", "release", "--on", "nowhere"]])
def test_an_unknown_target_is_named_before_any_confirmation(stack, args):
    """Without --yes and without a terminal, a command that would ask first still says the target does not
    exist (it used to answer confirmation_required for failover)."""
    env = run_cli("-c", str(stack), "-o", "json", *args).envelope
    assert env["exit_code"] == 2 and env["errors"][0]["code"] == "target.unknown", env


def test_missing_env_secret_is_bad_input(tmp_path):
    stack = chirp_stack(tmp_path, secrets="  CHIRP_SECRET_KEY: {from: env, var: LB_TEST_UNSET_SECRET}\n")
    env = check(run_cli("-c", str(stack), "-o", "json", "plan", "--on", "here"), "plan", 2, "error")
    assert env["errors"][0]["code"] == "secret.missing" and "LB_TEST_UNSET_SECRET" in env["errors"][0]["message"]


def test_human_mode_keeps_stdout_empty(stack):
    result = run_cli("-c", str(stack), "plan", "--on", "here")
    assert result.code == 0 and result.stdout == "" and "to create" in result.stderr


def test_envelope_is_valid_json_even_with_unicode(tmp_path):
    stack = chirp_stack(tmp_path)
    text = stack.read_text().replace("domain: chirp.lifeboat.test", "domain: chirp.lifeboat.test\n# café ☕")
    stack.write_text(text)
    out = run_cli("-c", str(stack), "-o", "json", "validate")
    assert json.loads(out.stdout)["status"] == "ok"


def test_commands_for_a_capability_read_the_providers_features(tmp_path):
    """`release` and `hosts` need FEATURES releases / ssh_hosts: the local provider declares neither, so both
    are refused as bad input naming the target, before anything is touched."""
    stack = chirp_stack(tmp_path)
    for argv, code in ((["release", "list"], "release.unsupported"), (["hosts", "trust"], "hosts.none")):
        result = run_cli("-c", str(stack), "-o", "json", *argv, "--on", "here")
        assert result.code == 2, result
        error = result.envelope["errors"][0]
        assert error["code"] == code and "here (local)" in error["message"], error
    assert not (tmp_path / "state").exists()


def test_the_target_without_on(tmp_path, monkeypatch):
    """--on may be left out: the only target, else $LIFEBOAT_TARGET, else the stack's default_target:; a stack
    of several targets and none of these is a usage error naming them (exit 2, nothing done)."""
    monkeypatch.delenv("LIFEBOAT_TARGET", raising=False)
    one = tmp_path / "one"
    one.mkdir()
    check(run_cli("-c", str(chirp_stack(one)), "-o", "json", "plan"), "plan", 0, "changes")
    two = tmp_path / "two"
    two.mkdir()
    stack = chirp_stack(two, extra_target="  spare:\n    type: local\n    state_dir: state/spare\n    address: 127.0.0.20\n")
    env = check(run_cli("-c", str(stack), "-o", "json", "plan"), "plan", 2, "error")
    assert "here, spare" in env["errors"][0]["message"] and "default_target" in env["errors"][0]["message"], env
    env = check(run_cli("-c", str(stack), "-o", "json", "plan", env={"LIFEBOAT_TARGET": "spare"}), "plan", 0,
                "changes")
    assert env["data"]["target"] == "spare"
    stack.write_text(stack.read_text() + "default_target: spare\n")
    assert run_cli("-c", str(stack), "-o", "json", "plan").envelope["data"]["target"] == "spare"
    assert run_cli("-c", str(stack), "-o", "json", "plan", env={"LIFEBOAT_TARGET": "here"}).envelope["data"][
        "target"] == "here"  # the environment overrides the file
    stack.write_text(stack.read_text().replace("default_target: spare", "default_target: spar"))
    env = check(run_cli("-c", str(stack), "-o", "json", "validate"), "validate", 2, "error")
    error = env["errors"][0]
    assert error["key"] == "default_target" and error["line"] and 'did you mean "spare"' in error["hint"], error


def test_shell_completion_offers_the_stacks_targets_and_services(tmp_path):
    """click's completion (README: the one line that installs it for bash, zsh, fish) reads the stack file."""
    stack = chirp_stack(tmp_path, extra_target="  spare:\n    type: local\n    state_dir: state/spare\n")

    def complete(words: str, index: int) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "toolkit.cli"], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "_LIFEBOAT_COMPLETE": "bash_complete",
                                   "COMP_WORDS": words, "COMP_CWORD": str(index), "LIFEBOAT_CONFIG": str(stack)},
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("lifeboat plan --on ", 3) == ["here", "spare"]
    assert complete("lifeboat migrate --from here --to s", 5) == ["spare"]
    assert complete("lifeboat exec --on here w", 4) == ["web", "worker"]
    assert "migrate" in complete("lifeboat mi", 1)


def test_config_shows_the_stack_as_a_target_gets_it_and_plan_names_what_it_ignores(tmp_path):
    """`config` fills in every default and the target's env over the service's, without a secret value;
    `plan` on a target without a TLS proxy says tls: is not applied there (a warning with its code)."""
    stack = chirp_stack(tmp_path)
    text = stack.read_text().replace("    state_dir: state/here\n",
                                      "    state_dir: state/here\n    env: {CHIRP_WORKERS: \"3\"}\n")
    stack.write_text(text + "tls: {acme_email: ops@chirp.lifeboat.test}\n")
    shown = run_cli("-c", str(stack), "-o", "json", "config", "--on", "here")
    assert shown.code == 0, shown
    data = shown.envelope["data"]
    assert data["target"]["type"] == "local" and data["target"]["features"]["tls"] is False
    assert data["stack"]["services"]["web"]["env"]["CHIRP_WORKERS"] == "3"  # the target's over the service's
    assert data["stack"]["services"]["web"]["replicas"] == 1 and data["stack"]["postgres"]["database"] == "chirp"
    assert data["stack"]["secrets"]["CHIRP_SECRET_KEY"] == {"from": "generate"}
    human = run_cli("-c", str(stack), "config", "--on", "here")
    assert json.loads(human.stdout)["stack"]["name"] == "chirp"
    plan = run_cli("-c", str(stack), "-o", "json", "plan", "--on", "here")
    assert {"code": "plan.tls_unsupported", "message": plan.envelope["data"]["warnings"][0]["message"]} in \
        plan.envelope["data"]["warnings"], plan.envelope["data"]["warnings"]


def test_validate_strict_and_plan_name_every_missing_secret_and_a_misspelt_type(tmp_path, monkeypatch):
    monkeypatch.delenv("LB_TEST_NOPE_A", raising=False)
    stack = chirp_stack(tmp_path, secrets="  CHIRP_SECRET_KEY: {from: generate}\n"
                                          "  A: {from: env, var: LB_TEST_NOPE_A}\n  B: {from: file, path: nope.txt}\n")
    assert run_cli("-c", str(stack), "-o", "json", "validate").code == 0  # the file itself is valid
    for argv in (["validate", "--strict"], ["plan", "--on", "here"]):
        env = run_cli("-c", str(stack), "-o", "json", *argv).envelope
        assert env["exit_code"] == 2, env
        assert [(e["code"], e["key"]) for e in env["errors"]] == [("secret.missing", "secrets.A"),
                                                                  ("secret.missing", "secrets.B")], env
        assert "LB_TEST_NOPE_A" in env["errors"][0]["message"] and "nope.txt" in env["errors"][1]["message"]
    (tmp_path / "nope.txt").write_text("there now\n")
    ok = run_cli("-c", str(stack), "-o", "json", "validate", "--strict", env={"LB_TEST_NOPE_A": "set"})
    assert ok.code == 0, ok
    stack.write_text(stack.read_text().replace("    type: local\n", "    tpye: local\n"))
    env = run_cli("-c", str(stack), "-o", "json", "validate").envelope
    keys = {e["key"]: e for e in env["errors"]}
    assert "providers.here" in keys and keys["providers.here.tpye"]["hint"] == 'did you mean "type"?', env


def test_an_unreachable_host_is_named_with_its_address_port_and_a_hint(tmp_path):
    """Nothing listens on the port: the host, user@address:port, why in words, what to check (never
    paramiko's "[Errno None] Unable to connect")."""
    stack = chirp_stack(tmp_path, extra_target="""  colo:
    type: baremetal
    connect_timeout: 5
    hosts:
      - {name: box, address: 127.0.0.1, port: 1, user: root, roles: [web, worker, db, storage]}
""")
    env = run_cli("-c", str(stack), "-o", "json", "status", "--on", "colo").envelope
    assert env["exit_code"] == 5, env
    error = env["errors"][0]
    assert "box" in error["message"] and "127.0.0.1" in error["message"] and "1" in error["message"], error
    assert "connection refused" in error["message"] and "Errno None" not in error["message"], error
    assert "sshd listens on port 1" in (error["hint"] or ""), error
