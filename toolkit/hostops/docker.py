"""The docker runtime: images built on the hosts, containers rolled one replica at a time."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager

from toolkit.errors import CommandFailed, ProviderError
from toolkit.hostops.shell import sh
from toolkit.transport.connection import Connection


class DockerRuntime:
    """Services as containers of the host's Docker engine, images built on the host from the uploaded
    release (or loaded from another host with ``docker save | docker load``: no registry needed)."""

    def __init__(self, conn: Connection, root: str, *, stack: str, host: str, docker_host: str | None = None):
        from toolkit.commands import dockercmd

        self.cmd = dockercmd
        self.conn = conn
        self.root = root
        self.stack = stack
        self.host = host
        self.env = {"DOCKER_HOST": docker_host} if docker_host else None
        self.dir = f"{root}/containers"

    def run(self, argv: list[str], **kw):
        return self.conn.run(argv, env=self.env, **kw)

    def check(self) -> str:
        result = self.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=30)
        if not result.ok:
            why = result.stderr.decode(errors="replace").strip()[-300:]
            raise ProviderError(f"{self.conn.host}: no Docker engine answers ({why}).",
                                hint="install and start Docker on the host, or set docker_host for it.",
                                code="host.missing_docker")
        return f"docker {result.text.strip()}"

    def has_image(self, tag: str) -> bool:
        return self.run(self.cmd.image_exists(tag), check=False).ok

    def build(self, tag: str, context: str, base_image: str | None) -> None:
        if self.conn.read_bytes(f"{context}/Dockerfile") is None:
            raise BadDockerfile(f"{self.conn.host}: the docker runtime builds from a Dockerfile, and the build "
                                "directory has none.", hint="add a Dockerfile to the service's build: directory, "
                                "or use the process runtime.")
        try:
            self.run(self.cmd.build(tag, context, base_image=base_image), timeout=1800)
        except CommandFailed as exc:
            raise ProviderError(f"{self.conn.host}: docker build of {tag} failed: {exc.message}",
                                code="host.docker_build") from None

    def send_image(self, tag: str, other: DockerRuntime) -> None:
        """Copy an image to another host's engine as a stream (save | load), nothing written to disk."""
        with self.conn.read_stream(self.cmd.save(tag), env=self.env) as source, \
                other.conn.write_stream(other.cmd.load(), env=other.env) as sink:
            shutil.copyfileobj(source, sink, 1 << 20)

    def containers(self) -> dict[str, dict]:
        result = self.run(self.cmd.list_containers(self.stack), check=False, timeout=30)
        out = {}
        for line in result.text.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            labels = dict(kv.split("=", 1) for kv in (item.get("labels") or "").split(",") if "=" in kv)
            out[item["name"]] = {"state": item.get("state"), "labels": labels}
        return out

    def programs(self) -> dict[str, dict]:
        """The stack's containers on this host in the supervisor's terms: program name ("web.0") -> state,
        generation and container name."""
        out = {}
        for name, c in self.containers().items():
            if name.startswith(f"lifeboat-{self.stack}-{self.host}-"):
                labels = c["labels"]
                program = f"{labels.get('lifeboat.stack.service')}.{labels.get('lifeboat.stack.replica')}"
                out[program] = {"state": c["state"], "generation": labels.get("lifeboat.stack.generation"),
                                "pid": None, "container": name}
        return out

    def mine(self, service: str, *, aside: bool = False) -> dict[str, dict]:
        """The service's containers on this host by name (replica containers; with ``aside`` also a previous
        one kept during a rollout)."""
        prefix = f"lifeboat-{self.stack}-{self.host}-{service}-"
        tail = re.compile(r"[0-9]+(-previous)?" if aside else r"[0-9]+")
        return {n: c for n, c in self.containers().items() if n.startswith(prefix) and tail.fullmatch(n[len(prefix):])}

    def deploy(self, service: str, *, image: str, command: list[str], envs: list[dict[str, str]], generation: str,
               healthy: Callable[[int], bool], timeout: float = 90.0, volumes: tuple[str, ...] = ()) -> None:
        """Replace the service's containers one replica at a time: stop the old one (kept aside), start the
        new, wait until it is healthy, then the next (the others, and other hosts, keep serving meanwhile). A
        replica that exits or stays unhealthy is removed and the old container of that replica started again
        (a failed rollout leaves the previous release serving); the error says so, with the new one's log."""
        sh(self.conn, 'mkdir -p "$1" && chmod 700 "$1"', self.dir)
        current = self.mine(service)
        for replica, env in enumerate(envs):
            name = self.cmd.container_name(self.stack, self.host, service, replica)
            found = current.get(name)
            if found and found["state"] == "running" and found["labels"].get("lifeboat.stack.generation") == generation:
                continue
            aside = f"{name}-previous"
            self.run(self.cmd.remove(aside), check=False, timeout=60)  # (left by a run killed mid-way)
            env_path = f"{self.dir}/{service}.{replica}.env"
            if found:  # the old env file stays with the old container (docker read it when it was made)
                self.run(self.cmd.stop(name), check=False, timeout=60)
                self.run(self.cmd.rename(name, aside), timeout=60)
            self.conn.write_bytes(env_path, self.cmd.env_file(env), mode=0o600)
            self.run(self.cmd.run(name, image, command, env_file=env_path, stack=self.stack, service=service,
                                  replica=replica, generation=generation, volumes=volumes), timeout=120)
            if self._wait_up(name, service, replica, healthy, timeout):
                self.run(self.cmd.remove(aside), check=False, timeout=60)
                continue
            log = self.run(self.cmd.logs(name), check=False)
            said = ""
            self.run(self.cmd.remove(name), check=False, timeout=60)
            if found:
                back = self.run(self.cmd.rename(aside, name), check=False, timeout=60).ok and \
                    self.run(self.cmd.start(name), check=False, timeout=60).ok
                if not back:
                    said = f" Starting the previous container again failed: it is kept as {aside}."
                elif self._wait_up(name, service, replica, healthy, timeout):
                    said = " The previous container of that replica runs again, healthy."
                else:
                    said = " The previous container of that replica was started again but is not healthy."
            raise ProviderError(f"{self.conn.host}: container {name} did not become healthy within {timeout:.0f} s."
                                f"{said} Its log ends with:\n"
                                f"{(log.stdout + log.stderr).decode(errors='replace')[-1200:]}",
                                code="host.unhealthy")
        for name in current:
            replica = name.rsplit("-", 1)[1]
            if int(replica) >= len(envs):
                self.run(self.cmd.remove(name), check=False, timeout=60)
                self.conn.run(["rm", "-f", f"{self.dir}/{service}.{replica}.env"])

    def _wait_up(self, name: str, service: str, replica: int, healthy: Callable[[int], bool], timeout: float) -> bool:
        """Whether container ``name`` runs and is healthy within ``timeout`` (False at once when it exits)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.mine(service).get(name, {}).get("state")
            if state == "running" and healthy(replica):
                return True
            if state in ("exited", "dead", "restarting"):  # (restarting: it died, docker starts it again)
                return False
            time.sleep(0.5)
        return False

    @contextmanager
    def _scratch_file(self, kind: str, body: bytes):
        """A 0600 file of ``body`` in the runtime's 0700 folder for the time of the block (an environment a
        one-off container reads), removed after."""
        import secrets as pysecrets

        sh(self.conn, 'mkdir -p "$1" && chmod 700 "$1"', self.dir)
        path = f"{self.dir}/{kind}-{pysecrets.token_hex(4)}.env"
        self.conn.write_bytes(path, body, mode=0o600)
        try:
            yield path
        finally:
            self.conn.run(["rm", "-f", path])

    def run_once(self, image: str, argv: list[str], env: dict[str, str], *, volumes: tuple[str, ...] = (),
                 timeout: float = 3600, terminal: bool = False):
        """``argv`` in a fresh container of ``image`` (removed when it exits) with ``env`` (an env file, 0600,
        removed after): `exec` and the release phase, the result (not checked); with ``terminal``, on this
        terminal through a pseudo-terminal of the host (`console`), its exit status."""
        with self._scratch_file("once", self.cmd.env_file(env)) as path:
            command = self.cmd.run_once(image, list(argv), env_file=path, volumes=volumes, terminal=terminal)
            if terminal:
                return self.conn.interactive(command, env=self.env)
            return self.run(command, check=False, timeout=timeout)

    def is_built(self, tag: str) -> bool:
        """Whether the build command has run into image ``tag`` (``build_in_image`` labels what it commits)."""
        result = self.run(self.cmd.image_label(tag, BUILT_LABEL), check=False)
        return result.ok and result.text.strip() == "1"

    def build_in_image(self, tag: str, argv: list[str], env: dict[str, str], *, timeout: float = 3600):
        """The build command ``argv`` run in a container of image ``tag`` (as its image runs the services'
        commands: through its entrypoint, as its user, in its working folder) and committed back as ``tag``,
        labelled built, with the image's own command. The environment reaches the command through a file
        mounted read only and read by ``/bin/sh``, never through docker's -e or --env-file: a committed container keeps those in its
        image, and no secret may stay in an image. The result (checked by the caller); on failure the image
        is left unbuilt (the next `up` runs the command again)."""
        import secrets as pysecrets
        import shlex

        config = json.loads(self.run(self.cmd.image_config(tag), timeout=60).text or "{}") or {}
        name = f"lifeboat-build-{self.stack}-{pysecrets.token_hex(4)}"
        body = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()
        with self._scratch_file("build", body) as path:
            try:
                result = self.run(self.cmd.run_sourcing(name, tag, list(argv), env_path=path), check=False,
                                  timeout=timeout)
                if result.ok:
                    self.run(self.cmd.commit(name, tag, cmd=config.get("Cmd"), label=BUILT_LABEL), timeout=600)
                return result
            finally:
                self.run(self.cmd.remove(name), check=False, timeout=60)

    def pause_service(self, service: str) -> None:
        """Stop the service's containers, keeping them (a write freeze); `resume_service` starts them."""
        for name, found in sorted(self.mine(service).items()):
            if found["state"] == "running":
                self.run(self.cmd.stop(name), timeout=60)

    def resume_service(self, service: str, healthy: Callable[[int], bool], timeout: float = 90.0) -> None:
        for name, found in sorted(self.mine(service).items()):
            replica = int(name.rsplit("-", 1)[1])
            if found["state"] != "running":
                self.run(self.cmd.start(name), timeout=60)
            deadline = time.time() + timeout
            while not (self.mine(service).get(name, {}).get("state") == "running" and healthy(replica)):
                if time.time() > deadline:
                    raise ProviderError(f"{self.conn.host}: container {name} did not become healthy again "
                                        f"within {timeout:.0f} s.", code="host.unhealthy")
                time.sleep(0.5)

    def remove_service(self, service: str) -> None:
        for name in self.mine(service, aside=True):
            self.run(self.cmd.remove(name), check=False, timeout=60)
        self.conn.run(["sh", "-c", 'rm -f "$0"/"$1".*.env', self.dir, service])

    def remove_all(self) -> None:
        for name in self.containers():
            if name.startswith(f"lifeboat-{self.stack}-{self.host}-"):
                self.run(self.cmd.remove(name), check=False, timeout=60)

    def prune_images(self, service: str, keep: list[str], count: int = 3) -> None:
        tags = [t for t in self.run(self.cmd.list_images(self.stack, service), check=False).text.split() if t]
        for tag in tags[count:]:
            if tag not in keep:
                self.run(self.cmd.remove_image(f"lifeboat/{self.stack}-{service}:{tag}"), check=False)

    def remove_images(self, services: list[str]) -> None:
        for service in services:
            for tag in [t for t in self.run(self.cmd.list_images(self.stack, service), check=False).text.split() if t]:
                self.run(self.cmd.remove_image(f"lifeboat/{self.stack}-{service}:{tag}"), check=False)


BUILT_LABEL = "lifeboat.stack.built"


class BadDockerfile(ProviderError):
    code = "host.no_dockerfile"
