"""~/.ssh/config aliases and ProxyJump: a host reached through a bastion, keys verified at both hops."""

from __future__ import annotations

import pytest

from toolkit.transport.hosts import HostSpec, SshDirectory
from toolkit.transport.ssh import UnknownHostKey


@pytest.fixture
def ssh_config(tmp_path, ssh_lab):
    bastion, inner = ssh_lab.hosts[0], ssh_lab.hosts[1]
    path = tmp_path / "ssh_config"
    path.write_text(f"""Host bastion
    HostName {bastion.address}
    Port {bastion.port}
    User {ssh_lab.user}
    IdentityFile {ssh_lab.client_key}

Host inner
    HostName {inner.address}
    Port {inner.port}
    User {ssh_lab.user}
    IdentityFile {ssh_lab.client_key}
    ProxyJump bastion
""")
    return path


def test_alias_and_proxyjump(tmp_path, ssh_lab, ssh_config):
    import paramiko

    directory = SshDirectory([HostSpec("app", "inner", ("web",), "/srv/x")], known_hosts=str(ssh_lab.known_hosts),
                             ssh_config=str(ssh_config), base=tmp_path, target="colo")
    try:
        params = directory.params(directory.specs["app"])
        assert params == {"address": ssh_lab.hosts[1].address, "port": ssh_lab.hosts[1].port, "user": ssh_lab.user,
                          "key": str(ssh_lab.client_key), "jump": "bastion"}
        conn = directory.connection("app")
        out = conn.run(["sh", "-c", "echo $SSH_CONNECTION"]).text.split()
        assert out[2] == ssh_lab.hosts[1].address
        # the session really travels through the bastion: its socket is an SSH channel, not a TCP socket
        assert isinstance(conn.client().get_transport().sock, paramiko.Channel)
    finally:
        directory.close()


def test_unknown_bastion_key_is_refused(tmp_path, ssh_lab, ssh_config):
    ssh_lab.write_known_hosts(ssh_lab.hosts[1:])  # the bastion is unknown
    directory = SshDirectory([HostSpec("app", "inner", ("web",), "/srv/x")], known_hosts=str(ssh_lab.known_hosts),
                             ssh_config=str(ssh_config), base=tmp_path, target="colo")
    try:
        with pytest.raises(UnknownHostKey) as info:
            directory.connection("app").run(["true"])
        assert "bastion" in info.value.message
    finally:
        directory.close()
        ssh_lab.write_known_hosts()


def test_pinned_key_replaces_known_hosts(tmp_path, ssh_lab):
    host = ssh_lab.hosts[2]
    key_type, blob = host.public_key_line.split()[1:3]
    spec = HostSpec("db", host.address, ("db",), "/srv/x", port=host.port, user=ssh_lab.user, key=str(ssh_lab.client_key),
                    host_keys=(f"{key_type} {blob}",))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    directory = SshDirectory([spec], known_hosts=str(empty), ssh_config=None, base=tmp_path)
    try:
        assert directory.connection("db").run(["true"]).ok
    finally:
        directory.close()
    wrong = HostSpec("db", host.address, ("db",), "/srv/x", port=host.port, user=ssh_lab.user,
                     key=str(ssh_lab.client_key), host_keys=(ssh_lab.hosts[0].public_key_line.split(" ", 1)[1],))
    directory = SshDirectory([wrong], known_hosts=str(empty), ssh_config=None, base=tmp_path)
    try:
        from toolkit.errors import ProviderUnreachable

        with pytest.raises(ProviderUnreachable):
            directory.connection("db").run(["true"])
    finally:
        directory.close()
