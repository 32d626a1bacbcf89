"""The registry resolves built-in providers lazily and third-party ones through entry points."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO, chirp_stack, run_cli


def test_builtin_provider_modules_load_only_when_asked():
    code = ("import sys; from toolkit.contract import registry; assert 'providers.local' not in sys.modules; "
            "registry.load('local'); assert 'providers.local' in sys.modules; "
            "assert 'psycopg' not in sys.modules and 'redis' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


def test_third_party_provider_through_entry_point(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "lbplugin_demo.py").write_text(
        "from providers.local import LocalProvider\n\n"
        "class DemoProvider(LocalProvider):\n"
        "    TYPE = 'demo-local'\n"
        "    DESCRIPTION = 'a third-party provider registered by entry point'\n")
    info = plugin / "lbplugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lbplugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lifeboat.providers]\ndemo-local = lbplugin_demo:DemoProvider\n")
    env = {"PYTHONPATH": f"{plugin}:{REPO}"}
    listed = run_cli("-o", "json", "providers", env=env).envelope["data"]["providers"]
    assert "demo-local" in [p["type"] for p in listed]
    stack = chirp_stack(tmp_path)
    stack.write_text(stack.read_text().replace("type: local", "type: demo-local"))
    result = run_cli("-c", str(stack), "-o", "json", "validate", env=env)
    assert result.code == 0 and result.envelope["data"]["targets"] == {"here": "demo-local"}
    unknown = run_cli("-c", str(stack), "-o", "json", "validate")  # without the plugin on the path
    assert unknown.code == 2 and "demo-local" in unknown.envelope["errors"][0]["message"]
