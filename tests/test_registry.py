"""The registry resolves built-in providers lazily and third-party ones through entry points."""

from __future__ import annotations

import os
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


PLUGIN = '''"""A third-party provider as the README's recipe makes one: one module, composed from Lifeboat's parts."""
from toolkit.config.schema import Field, Str
from toolkit.contract import DnsOnlyProvider
from toolkit.dns.zonefile import ZoneFileDns


class FolderDns(DnsOnlyProvider):
    TYPE = "folder-dns"
    DESCRIPTION = "DNS only: zone files in a folder (a plugin composed from toolkit.dns)"
    SETTINGS = {"folder": Field(Str(expected="a folder for the zone files"), required=True)}

    def check(self):
        return {"folder": str(self.stack.root / self.settings["folder"])}

    def dns(self):
        return ZoneFileDns(self.stack.root / self.settings["folder"])
'''

PLUGIN_TEST = '''"""The plugin's one contract-test subclass: Lifeboat's exported suite, run against it."""
import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import DnsContract
from toolkit.run.engine import Engine


class TestFolderDns(DnsContract):
    @pytest.fixture
    def provider(self):
        return Engine(stackfile.load(stackfile.resolve_path(None))).provider("names")
'''


def test_a_new_provider_is_one_module_and_one_contract_subclass(tmp_path):
    """The README's recipe (Design: adding a provider), followed by a stranger: a module composed from
    toolkit's parts, registered through the entry point, validated in a stack, passing the shipped
    contract suite (toolkit.contract.suite) run by pytest in the plugin's own folder."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "folder_dns.py").write_text(PLUGIN)
    (plugin / "test_folder_dns.py").write_text(PLUGIN_TEST)
    info = plugin / "folder_dns-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: folder-dns\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lifeboat.providers]\nfolder-dns = folder_dns:FolderDns\n")
    stack = chirp_stack(tmp_path, dns=False)
    stack.write_text(stack.read_text() + "  names:\n    type: folder-dns\n    folder: zones\n"
                     "dns:\n  provider: names\n  zone: lifeboat.test\n")
    env = {"PYTHONPATH": f"{plugin}:{REPO}", "LIFEBOAT_CONFIG": str(stack)}
    result = run_cli("-c", str(stack), "-o", "json", "validate", env=env)
    assert result.code == 0 and result.envelope["data"]["targets"]["names"] == "folder-dns", result
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin)],
                           capture_output=True, text=True, cwd=plugin, timeout=300,
                           env={**os.environ, **env})
    assert suite.returncode == 0 and "2 passed" in suite.stdout, suite.stdout + suite.stderr
    assert sorted(p.name for p in (tmp_path / "zones").iterdir())  # the records went where the plugin keeps them
