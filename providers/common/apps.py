"""The app services on the hosts: releases built and shipped, programs under systemd or Lifeboat's
supervisor, containers, rolling restarts checked by health, the write freeze (pause), releases kept for
rollback. A part of :class:`providers.common.hosts.HostsProvider` (whose hosts, state and runtimes it uses)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shlex
import time

from toolkit.commands.dockercmd import image_tag
from toolkit.config.envtemplate import resolve
from toolkit.contract import (
    Resource,
    SecretValue,
)
from toolkit.errors import BadInput, ProviderError
from toolkit.hostops.builds import SKIP_IN_BUILD, requirements_of
from toolkit.hostops.many import HostsFailed, on_hosts, one_host_at_a_time
from toolkit.hostops.releases import Releases
from toolkit.hostops.shell import sh
from toolkit.transport.hosts import HostSpec


class AppDeploys:
    # ------------------------------------------------------------------ services
    def config_id(self, svc, secrets: dict[str, SecretValue] | None = None, *, create: bool = False) -> str:
        key = self.internal_secret("release_key", create=create)
        key_bytes = key.reveal() if key is not None else b"not-yet-created"
        env = self.env_templates(svc)
        store = self.secrets()
        for name in svc.secrets:
            value = (secrets or {}).get(name) or store.read(name)
            env[name] = value.reveal_text() if value is not None else ""
        doc = {"env": env, "replicas": svc.replicas, "port": self.app_port(svc, 0) if svc.is_web else svc.port,
               "buckets": sorted(self.stack.buckets)}
        remote = self.remote_bucket_env(create=create)
        if remote:
            doc["store"] = remote  # a new key, endpoint or gateway port restarts the services
        blob = json.dumps(doc, sort_keys=True).encode()
        return hmac.new(key_bytes, blob, hashlib.sha256).hexdigest()[:16]

    def service_env(self, svc, spec: HostSpec, *, replica: int, release: str) -> dict[str, str]:
        """What a process of ``svc`` gets on host ``spec``: Lifeboat's variables, the stack's env, secrets,
        and (process runtime) the release's code and virtualenv on the path."""
        env: dict[str, str] = {}
        if self.runtime_kind == "process":
            releases = Releases(self.conn(spec.name), spec.root)
            cwd = releases.path(svc.name, release)
            venv = releases.venv_path(self.requirements_for(svc))
            env = {"PYTHONPATH": cwd, "PATH": (f"{venv}/bin:" if venv else "")
                   + "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
            if venv:
                env["VIRTUAL_ENV"] = venv
        env.update({"LIFEBOAT_STACK": self.stack.name, "LIFEBOAT_SERVICE": svc.name, "LIFEBOAT_REPLICA": str(replica),
               "LIFEBOAT_BIND": self.listen_address(spec), "LANG": "C.UTF-8"})
        if self.stack.postgres:
            env["DATABASE_URL"] = self.database_url().reveal_text()
        if self.stack.redis is not None:
            env["REDIS_URL"] = self.redis_url().reveal_text()
        env.update(self.bucket_env(spec))
        if svc.is_web:
            env["PORT"] = str(self.app_port(svc, replica))
        store = self.secrets()
        given = {name: value.reveal_text() for name in svc.secrets if (value := store.read(name)) is not None}
        env.update(resolve(self.env_templates(svc), {**env, **given}, where=f"{self.label}: service {svc.name}"))
        env.update(given)
        return env

    def _host_programs(self, host: str, state: dict) -> list[dict]:
        programs = []
        paused = set(state.get("paused", []))
        for name, info in sorted(state.get("services", {}).items()):
            if host in info.get("hosts", []) and name not in paused:
                programs.extend(p for p in info.get("programs", []) if p["host"] == host)
        programs.extend(p for p in (state.get("proxy") or {}).get("programs", []) if p["host"] == host)
        programs.extend(p for p in (state.get("media") or {}).get("programs", []) if p["host"] == host)
        return programs

    def _volumes(self, host: str) -> tuple[str, ...]:
        storage = self.hosts_with("storage")
        if storage and storage[0].name == host and self.stack.buckets:
            return (f"{self.root(host)}/objects",)
        return ()

    def _apply_service_docker(self, before, after) -> None:
        svc = self.stack.services[after.name]
        release = after.attrs["release"]
        config = self.config_id(svc, create=True)
        generation = f"{release}:{config}"
        hosts = self.placement(svc)
        old_hosts = before.attrs.get("hosts", []) if before else []
        tag = image_tag(self.stack.name, svc.name, release)
        base_image = (self.settings.get("docker") or {}).get("base_image")
        first = hosts[0]
        docker = self.docker(first)
        if not docker.has_image(tag):
            self.events.step(f"{first}: uploading and building {tag}")
            context = Releases(self.conn(first), self.root(first)).upload(svc.name, release, svc.build, SKIP_IN_BUILD)
            docker.build(tag, context, base_image)
        if svc.build_command and not docker.is_built(tag):
            self.events.step(f"{first}: building {svc.name} release {release}: {shlex.join(svc.build_command)}")
            env = self.service_env(svc, self.spec(first), replica=0, release=release)
            self._phase_ok(first, svc, docker.build_in_image(tag, list(svc.build_command), env), svc.build_command,
                           what="build command", code="host.build")

        def ship(host: str) -> None:
            if host != first and not self.docker(host).has_image(tag):
                self.events.step(f"{first} -> {host}: docker save | docker load {tag}")
                self.docker(first).send_image(tag, self.docker(host))

        on_hosts(hosts, ship, parallel=self.parallel)
        released = (self.state().get("services", {}).get(svc.name) or {}).get("released")
        if svc.release_command and released != release:
            # once per new release, on one host, before any replica of it runs: the previous one still serves
            self.events.step(f"{first}: release phase of {svc.name} {release}: {shlex.join(svc.release_command)}")
            env = self.service_env(svc, self.spec(first), replica=0, release=release)
            self._phase_ok(first, svc, docker.run_once(tag, list(svc.release_command), env,
                                                       volumes=self._volumes(first)),
                           svc.release_command, what="release command", code="host.release_failed",
                           after="; the new release was not started and the previous one still serves")
            released = release
        state = self.state()
        state.setdefault("services", {})[svc.name] = {
            "release": release, "config": config, "replicas": svc.replicas, "hosts": hosts, "confirmed": False,
            "generation": generation, "runtime": "docker", "programs": [],
            "previous": _previous_release(state, svc.name, release), "released": released}
        self.save_state(state)

        def roll(host: str) -> None:
            spec = self.spec(host)
            runtime = self.docker(host)
            envs = [self.service_env(svc, spec, replica=i, release=release) for i in range(svc.replicas)]
            probe = self.runtime(host)
            address = self.listen_address(spec)

            def healthy(replica: int) -> bool:
                if not svc.is_web:
                    return True
                return probe.http_ok(f"http://{address}:{self.app_port(svc, replica)}{svc.health or '/'}",
                                     self.health_headers())

            runtime.deploy(svc.name, image=tag, command=list(svc.command), envs=envs, generation=generation,
                           healthy=healthy, volumes=self._volumes(host), timeout=self.health_timeout(svc))
            runtime.prune_images(svc.name, keep=[release])

        one_host_at_a_time(hosts, roll)  # the other hosts keep serving while one rolls
        for host in set(old_hosts) - set(hosts):
            self.docker(host).remove_service(svc.name)
        self._confirm("services", svc.name)

    def _apply_service(self, before, after) -> None:
        if self.runtime_kind == "docker":
            return self._apply_service_docker(before, after)
        svc = self.stack.services[after.name]
        release = after.attrs["release"]
        config = self.config_id(svc, create=True)
        generation = f"{release}:{config}"
        hosts = self.placement(svc)
        old_hosts = before.attrs.get("hosts", []) if before else []
        requirements = self.requirements_for(svc)

        def prepare(host: str) -> list[dict]:
            conn = self.conn(host)
            account = self.app_account(host)
            releases = Releases(conn, self.root(host))
            self.events.step(f"{host}: uploading {svc.name} release {release}")
            cwd = releases.upload(svc.name, release, svc.build, SKIP_IN_BUILD)
            releases.venv(requirements, events=self.events, host=host,
                          python=self.app_python(host) if account else "python3")
            if svc.build_command and conn.read_bytes(f"{cwd}/.lifeboat-built") is None:
                self.events.step(f"{host}: building {svc.name} release {release}: {shlex.join(svc.build_command)}")
                self.run_in_release(host, svc, release, list(svc.build_command), as_app=False, what="build command",
                                    code="host.build")
                # what it wrote is the release's: readable by the app account, written by no one
                conn.run(["chmod", "-R", "a+rX,go-w", cwd])
                conn.write_bytes(f"{cwd}/.lifeboat-built", b"ok", mode=0o644)
            for folder in svc.writable:  # the app's own scratch folders in its release (Rails' tmp/pids, log/)
                done = sh(conn, 'mkdir -p "$1/$2" && if [ -L "$1/$2" ]; then exit 3; fi && '
                          'if [ -n "$3" ]; then chown -hR "$3:$3" "$1/$2"; fi && chmod u+rwX "$1/$2"',
                          cwd, folder, account or "", check=False)
                if not done.ok:
                    raise ProviderError(f"{host}: writable folder {folder} of {svc.name}'s release cannot be made "
                                        "(a link, or not a folder).", code="host.writable")
            runtime = self.runtime(host)
            runtime.prepare()
            programs = []
            for replica in range(svc.replicas):
                env = self.service_env(svc, self.spec(host), replica=replica, release=release)
                program = f"{svc.name}.{replica}"
                programs.append({"name": program, "argv": list(svc.command), "cwd": cwd, "host": host,
                                 "env_file": runtime.write_env(program, env, tag=f"{release}-{config}"),
                                 "generation": generation,
                                 "log": f"{runtime.dir}/logs/{program}.log", "user": account})
            return programs

        prepared = on_hosts(hosts, prepare, parallel=self.parallel)
        released = (self.state().get("services", {}).get(svc.name) or {}).get("released")
        if svc.release_command and released != release:
            # once per new release, on one host, before any replica of it runs: the previous one still serves
            self.events.step(f"{hosts[0]}: release phase of {svc.name} {release}: {shlex.join(svc.release_command)}")
            self.run_in_release(hosts[0], svc, release, list(svc.release_command), as_app=True,
                                what="release command", code="host.release_failed",
                                after="; the new release was not started and the previous one still serves")
            released = release
        state = self.state()
        previous = [p for p in (state.get("services", {}).get(svc.name) or {}).get("programs", [])]
        state["paused"] = [n for n in state.get("paused", []) if n != svc.name]  # `up` lifts a freeze
        state.setdefault("services", {})[svc.name] = {
            "release": release, "config": config, "replicas": svc.replicas, "hosts": hosts, "confirmed": False,
            "generation": generation, "programs": [p for h in hosts for p in prepared[h]],
            "previous": _previous_release(state, svc.name, release), "released": released}
        self.save_state(state)

        started: list[str] = []

        def start(host: str) -> None:
            runtime = self.runtime(host)
            old = {p["name"]: p for p in previous if p["host"] == host}
            new = [p for p in prepared.get(host, [])]
            if svc.is_web and len(new) > 1 and old:
                # Replica after replica on this host too: the others (old release) keep serving meanwhile.
                others = [p for p in self._host_programs(host, state) if p["name"].rsplit(".", 1)[0] != svc.name]
                for index in range(len(new)):
                    mixed = new[:index + 1] + [old[p["name"]] for p in new[index + 1:] if p["name"] in old]
                    runtime.apply(others + mixed)
                    self._wait_replica(host, svc, index, generation)
            current = self._host_programs(host, state)
            runtime.apply(current)
            self._wait_healthy(host, svc, generation)
            runtime.prune_env([p["env_file"] for p in current])
            started.append(host)

        # One host after the other: while one restarts its processes, the others keep serving.
        try:
            one_host_at_a_time(hosts + sorted(set(old_hosts) - set(hosts)), start)
        except HostsFailed as failed:
            raise self._previous_where_it_failed(svc, failed, previous, started) from None
        for host in hosts:
            Releases(self.conn(host), self.root(host)).prune(svc.name, keep=[release])
        self._confirm("services", svc.name)

    def _previous_where_it_failed(self, svc, failed: HostsFailed, previous: list[dict], started: list[str]):
        """A rollout that failed on a host: that host runs its replicas of the previous release again (their
        folder and environment files are still there), the hosts not reached yet keep theirs, and the state
        says so host by host (the hosts done run the new release); the next `up` rolls it out again. The
        error to raise, saying what serves now."""
        host = next(iter(failed.failures))
        state = self.state()
        info = state.get("services", {}).get(svc.name)
        if info is None:
            return failed
        info["programs"] = ([p for p in info["programs"] if p["host"] in started]
                            + [p for p in previous if p["host"] not in started])
        self.save_state(state)
        again = [p for p in previous if p["host"] == host]
        try:
            self._apply_host(host, state)
            if again:
                self._wait_healthy(host, svc, again[0]["generation"])
                said = f" {host} runs the previous release again, healthy."
            else:
                said = f" {svc.name} was new on {host}: it no longer runs there."
        except Exception as exc:  # the rollout's failure is what matters; say how far the way back got
            said = f" Starting the previous release again on {host} failed too: {getattr(exc, 'message', exc)}"
        return ProviderError(failed.message + said + (f" Hosts that took the new release: {', '.join(started)}."
                                                      if started else ""),
                             hint=failed.hint, code=failed.code or "host.unhealthy")

    def _apply_host(self, host: str, state: dict):
        """``host`` runs what ``state`` says it runs (its supervisor or units stopped when that is nothing);
        its runtime."""
        runtime = self.runtime(host)
        programs = self._host_programs(host, state)
        if programs:
            runtime.apply(programs)
        elif runtime.running():
            runtime.stop()
        return runtime

    def run_in_release(self, host: str, svc, release: str, argv: list[str], *, as_app: bool, what: str = "",
                       code: str = "host.command", after: str = "", check: bool = True, timeout: float = 3600,
                       env: dict[str, str] | None = None):
        """``argv`` in ``svc``'s release folder on ``host`` with the service's environment (replica 0): as the
        app account when ``as_app`` (as the services run), else as the login (a build writes the release).
        With ``check``, a failure is a ProviderError naming ``what`` with the output's tail."""
        command, env, cwd = self.in_release(host, svc, release, argv, as_app=as_app, env=env)
        result = self.conn(host).run(command, env=env, cwd=cwd, check=False, timeout=timeout)
        if check:
            self._phase_ok(host, svc, result, argv, what=what, code=code, after=after)
        return result

    def in_release(self, host: str, svc, release: str, argv: list[str], *, as_app: bool,
                   env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str], str]:
        """(command, environment, folder) that run ``argv`` in ``svc``'s release folder on ``host`` with the
        service's environment (replica 0), as the app account when ``as_app``: for run_in_release and a
        console."""
        account = self.app_account(host) if as_app else None
        return ([*(["runuser", "-u", account, "--"] if account else []), *argv],
                {**self.service_env(svc, self.spec(host), replica=0, release=release), **(env or {})},
                Releases(self.conn(host), self.root(host)).path(svc.name, release))

    @staticmethod
    def _phase_ok(host: str, svc, result, argv, *, what: str, code: str, after: str = "") -> None:
        """A command run for ``svc`` (its build or release command) that failed: a ProviderError naming
        ``what``, with the output's tail."""
        if result.ok:
            return
        from toolkit.errors import tail

        raise ProviderError(f"{host}: the {what} of {svc.name} ({shlex.join(argv)}) exited with "
                            f"{result.exit_code}{after}. Its output ends with:\n"
                            f"{tail(result.stdout + result.stderr, lines=15)}", code=code)

    def health_headers(self) -> dict[str, str]:
        """A web service's health is asked as the proxy would ask (toolkit/hostops/health.py)."""
        from toolkit.hostops.health import proxy_headers

        return proxy_headers(self.stack)

    def health_timeout(self, svc, default: float = 90.0) -> float:
        return float(svc.health_timeout or default)

    def _wait_healthy(self, host: str, svc, generation: str, timeout: float | None = None) -> None:
        timeout = timeout or self.health_timeout(svc)
        runtime = self.runtime(host)
        state = self.state()
        info = state.get("services", {}).get(svc.name)
        wanted = {f"{svc.name}.{i}" for i in range(svc.replicas)} if info and host in info["hosts"] else set()
        address = self.listen_address(self.spec(host))
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = runtime.status()
            mine = {n for n in status if n.rsplit(".", 1)[0] == svc.name}
            if any(status[n].get("generation") == generation and status[n].get("state") == "crashed"
                   for n in mine):
                break  # it keeps dying right after it starts: waiting longer will not help
            if mine == wanted and all(status[n].get("generation") == generation and
                                      status[n].get("state") == "running" for n in wanted):
                if not svc.is_web or all(runtime.http_ok(f"http://{address}:{self.app_port(svc, i)}{svc.health or '/'}",
                                                         self.health_headers()) for i in range(svc.replicas)):
                    return
            time.sleep(0.5)
        detail = runtime.log_tail(f"{svc.name}.0") if wanted else ""
        raise ProviderError(f"{host}: service {svc.name} did not become healthy (waited up to {timeout:.0f} s)."
                            + (f" Its log ends with:\n{detail}" if detail else ""),
                            hint=f"logs are in {runtime.dir}/logs on {host}.", code="host.unhealthy")

    def _wait_replica(self, host: str, svc, replica: int, generation: str, timeout: float | None = None) -> None:
        timeout = timeout or self.health_timeout(svc)
        runtime = self.runtime(host)
        name = f"{svc.name}.{replica}"
        url = f"http://{self.listen_address(self.spec(host))}:{self.app_port(svc, replica)}{svc.health or '/'}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = runtime.status().get(name, {})
            if status.get("generation") == generation:
                if status.get("state") == "crashed":
                    break
                if status.get("state") == "running" and runtime.http_ok(url, self.health_headers()):
                    return
            time.sleep(0.3)
        raise ProviderError(f"{host}: {name} did not become healthy (waited up to {timeout:.0f} s); the other "
                            f"replicas still run the previous release. Its log ends with:\n{runtime.log_tail(name)}",
                            hint=f"logs are in {runtime.dir}/logs on {host}.", code="host.unhealthy")

    def _delete_service(self, resource) -> None:
        state = self.state()
        info = state.get("services", {}).pop(resource.name, None)
        self.save_state(state)
        if not info:
            return

        def stop(host: str) -> None:
            if info.get("runtime") == "docker":
                self.docker(host).remove_service(resource.name)
                self.conn(host).run(["rm", "-rf", f"{self.root(host)}/releases/{resource.name}"])
                return
            runtime = self.runtime(host)
            remaining = self._host_programs(host, state)
            if remaining:
                if runtime.running():
                    runtime.apply(remaining)
                else:
                    runtime.reap([p["name"] for p in info.get("programs", []) if p["host"] == host])
            else:
                runtime.stop()
            self.conn(host).run(["rm", "-rf", f"{self.root(host)}/releases/{resource.name}"])

        on_hosts(info.get("hosts", []), stop, parallel=self.parallel)

    # ------------------------------------------------------------------ pausing services (write freeze)
    def set_paused(self, services: list[str], paused: bool) -> None:
        state = self.state()
        deployed = state.get("services", {})
        now = set(state.get("paused", []))
        state["paused"] = sorted((now | set(services)) if paused else (now - set(services)))
        self.save_state(state)
        in_docker = [n for n in services if deployed.get(n, {}).get("runtime") == "docker"]
        if in_docker:
            self._set_paused_docker(in_docker, paused, deployed)
        services = [n for n in services if n not in in_docker]
        hosts = sorted({h for n in services for h in deployed.get(n, {}).get("hosts", [])})

        def apply(host: str) -> None:
            runtime = self._apply_host(host, state)
            if paused:
                deadline = time.time() + 60
                while time.time() < deadline:
                    status = runtime.status() if runtime.running() else {}
                    if not any(n.rsplit(".", 1)[0] in services for n in status):
                        return
                    time.sleep(0.2)
                raise ProviderError(f"{host}: {', '.join(services)} did not stop within 60 s.", code="host.pause")
            for name in services:
                if host in deployed.get(name, {}).get("hosts", []):
                    self._wait_healthy(host, self.stack.services[name], deployed[name]["generation"])

        on_hosts(hosts, apply, parallel=self.parallel)

    def _set_paused_docker(self, services: list[str], paused: bool, deployed: dict) -> None:
        """Containers are stopped (kept, with --restart unless-stopped they stay down) or started again and
        health-checked, host by host in parallel."""
        hosts = sorted({h for n in services for h in deployed[n].get("hosts", [])})

        def apply(host: str) -> None:
            runtime = self.docker(host)
            spec = self.spec(host)
            probe = self.runtime(host)
            address = self.listen_address(spec)
            for name in services:
                if host not in deployed[name].get("hosts", []):
                    continue
                svc = self.stack.services[name]
                if paused:
                    runtime.pause_service(name)
                    continue

                def healthy(replica: int, svc=svc) -> bool:
                    if not svc.is_web:
                        return True
                    return probe.http_ok(f"http://{address}:{self.app_port(svc, replica)}{svc.health or '/'}",
                                         self.health_headers())

                runtime.resume_service(name, healthy)

        on_hosts(hosts, apply, parallel=self.parallel)

    # ------------------------------------------------------------------ releases kept for rollback
    def requirements_for(self, svc) -> bytes | None:
        overrides = getattr(self, "_requirements_override", {})
        return overrides[svc.name] if svc.name in overrides else requirements_of(svc)

    def ex_releases(self) -> dict[str, dict]:
        """Per deployed service: the running release, the one a rollback goes to, and what the hosts keep."""
        out = {}
        for name, info in sorted(self.state().get("services", {}).items()):
            host = info["hosts"][0]
            if info.get("runtime") == "docker":
                docker = self.docker(host)
                kept = [t for t in docker.run(docker.cmd.list_images(self.stack.name, name), check=False).text.split()
                        if t]
            else:
                listing = sh(self.conn(host), 'cd "$1" 2>/dev/null && ls -1t || true',
                             f"{self.root(host)}/releases/{name}").text.split()
                kept = [r for r in listing if not r.endswith(".partial")]
            out[name] = {"release": info.get("release"), "previous": info.get("previous"), "kept": kept,
                         "hosts": info.get("hosts", [])}
        return out

    def ex_rollback(self, services: list[str] | None = None) -> list[dict]:
        """Put the previous release of each service (all by default) back, host after host, replica after
        replica, with the current configuration. The next `up` deploys the stack's own release again."""
        state = self.state()
        deployed = state.get("services", {})
        names = services or sorted(deployed)
        done = []
        for name in names:
            info = deployed.get(name)
            if not info or name not in self.stack.services:
                raise BadInput(f'{self.label}: service "{name}" is not deployed, or no longer in the stack.',
                               code="release.unknown_service")
            if not info.get("previous"):
                raise BadInput(f"{self.label}: service {name} has no earlier release to go back to.",
                               code="release.no_previous")
        for name in names:
            info = self.state()["services"][name]
            target, current = info["previous"], info["release"]
            for host in info["hosts"]:
                if info.get("runtime") == "docker":
                    present = self.docker(host).has_image(image_tag(self.stack.name, name, target))
                else:
                    present = self.conn(host).read_bytes(
                        f"{Releases(self.conn(host), self.root(host)).path(name, target)}/.lifeboat-release") is not None
                if not present:
                    raise ProviderError(f"{host}: release {target} of {name} is no longer kept there.",
                                        code="release.gone")
            if info.get("runtime") != "docker":
                first = info["hosts"][0]
                path = Releases(self.conn(first), self.root(first)).path(name, target)
                self._requirements_override = {**getattr(self, "_requirements_override", {}),
                                               name: self.conn(first).read_bytes(f"{path}/requirements.txt")}
            before = Resource("service", name, {"release": current, "hosts": info["hosts"]})
            after = Resource("service", name, {"release": target, "hosts": info["hosts"]})
            self.events.step(f"{name}: {current} -> {target}")
            self._apply_service(before, after)
            done.append({"service": name, "from": current, "to": target})
        return done


def _previous_release(state: dict, service: str, release: str) -> str | None:
    """The release to roll back to after deploying ``release``: the one running before, if it differs."""
    info = state.get("services", {}).get(service) or {}
    if info.get("release") and info["release"] != release:
        return info["release"]
    return info.get("previous")

