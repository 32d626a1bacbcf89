"""toolkit.transport.terraform against the real Terraform binary (python-terraform underneath), offline."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from toolkit.contract import SecretValue
from toolkit.transport.terraform import TerraformFailed, Workspace, summarise

MODULE = Path(__file__).resolve().parent / "tfmodule"


@pytest.fixture
def ws(tmp_path, terraform_rc):
    return Workspace(tmp_path / "ws", MODULE, env={"TF_CLI_CONFIG_FILE": str(terraform_rc)})


def test_plan_apply_replan_destroy(ws):
    ws.prepare({}, {"greeting": "hello"})
    first = ws.plan({"token": SecretValue("sekrit-123")})
    assert first.as_dict()["add"] == 2 and not first.count("noop")
    assert not list(ws.dir.glob("*secrets*")), "the sensitive var file outlived the command"
    ws.apply()
    assert ws.outputs() == {"note": "hello", "token_length": 10}
    assert sorted(r["address"] for r in ws.resources()) == ["terraform_data.note", "terraform_data.replaced"]
    again = ws.plan({"token": SecretValue("sekrit-123")})
    assert not again.has_changes and again.count("noop") == 2

    ws.prepare({}, {"greeting": "bonjour"})
    changed = ws.plan({"token": SecretValue("sekrit-123")})
    actions = {c.address: c.action for c in changed.changes}
    assert actions == {"terraform_data.note": "update", "terraform_data.replaced": "replace"}
    assert [c.changed for c in changed.changes if c.address == "terraform_data.note"] == [("input", "output")]
    ws.apply()
    assert ws.outputs()["note"] == "bonjour"

    ws.destroy({"token": SecretValue("sekrit-123")})  # python-terraform's own destroy() is broken
    assert ws.resources() == []


def test_files_are_private_and_the_secret_is_only_where_terraform_keeps_state(ws):
    ws.prepare({}, {"greeting": "hi"})
    ws.plan({"token": SecretValue("sekrit-456")})
    ws.apply()
    assert stat.S_IMODE(ws.dir.stat().st_mode) == 0o700
    for path in ws.dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            if path.name not in ("terraform.tfstate", "terraform.tfstate.backup"):
                assert b"sekrit-456" not in path.read_bytes(), path


def test_apply_without_a_plan_and_bad_config_fail_clearly(ws, tmp_path):
    ws.prepare({}, {"greeting": "x"})
    with pytest.raises(Exception, match="no saved plan"):
        ws.apply()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.tf").write_text('resource "terraform_data" "x" {\n  input = var.nope\n}\n')
    bad = Workspace(tmp_path / "ws2", broken, env=ws.env)
    bad.prepare({}, {})
    with pytest.raises(TerraformFailed) as info:
        bad.plan()
    assert "terraform plan" in info.value.message and "nope" in info.value.message


def test_summarise_reads_terraform_plan_json():
    plan = {"resource_changes": [
        {"address": "a.b", "type": "a", "change": {"actions": ["create"], "before": None, "after": {"x": 1}}},
        {"address": "a.c", "type": "a", "change": {"actions": ["delete", "create"], "before": {"x": 1},
                                                     "after": {"x": 2}, "after_unknown": {"id": True}}},
        {"address": "a.d", "type": "a", "change": {"actions": ["no-op"], "before": {}, "after": {}}},
        {"address": "a.e", "type": "a", "change": {"actions": ["delete"], "before": {"x": 1}, "after": None}},
    ]}
    summary = summarise(plan)
    assert [(c.address, c.action, c.changed) for c in summary.changes] == [
        ("a.b", "create", ()), ("a.c", "replace", ("x",)), ("a.d", "noop", ()), ("a.e", "delete", ())]
    assert summary.as_dict()["add"] == 2 and summary.as_dict()["destroy"] == 2


def test_missing_terraform_binary_is_a_clear_error(ws, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Exception, match="terraform binary is not on PATH"):
        ws.prepare({}, {"greeting": "x"})
    assert os.environ["PATH"] == "/nonexistent"
