"""Docker command lines, built as data (Kamal-style command objects; tested as exact argv).

Nothing here runs anything. Environment values go in an env file (0600) named by ``--env-file``, never
on the command line. Containers use the host's network and bind the host's own address, so a proxy or a
health check on the host reaches them at address:port as with the process runtime.
"""

from __future__ import annotations

LABEL = "lifeboat.stack"


def image_tag(stack: str, service: str, release: str) -> str:
    return f"lifeboat/{stack}-{service}:{release}"


def container_name(stack: str, host: str, service: str, replica: int) -> str:
    return f"lifeboat-{stack}-{host}-{service}-{replica}"


def build(tag: str, context: str, *, base_image: str | None = None, network: str = "host") -> list[str]:
    argv = ["docker", "build", "--network", network, "--label", f"{LABEL}.release={tag.rsplit(':', 1)[1]}",
            "-t", tag]
    if base_image:
        argv += ["--build-arg", f"BASE={base_image}"]
    return argv + [context]


def image_exists(tag: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", tag]


def save(tag: str) -> list[str]:
    return ["docker", "save", tag]


def load() -> list[str]:
    return ["docker", "load", "--quiet"]


def run(name: str, image: str, command: list[str], *, env_file: str, stack: str, service: str, replica: int,
        generation: str, restart: str = "unless-stopped", volumes: tuple[str, ...] = ()) -> list[str]:
    argv = ["docker", "run", "--detach", "--name", name, "--network", "host", "--restart", restart,
            "--env-file", env_file, "--log-opt", "max-size=10m",
            "--label", f"{LABEL}={stack}", "--label", f"{LABEL}.service={service}",
            "--label", f"{LABEL}.replica={replica}", "--label", f"{LABEL}.generation={generation}"]
    for volume in volumes:
        argv += ["--volume", f"{volume}:{volume}"]
    return argv + [image, *command]


def run_once(image: str, command: list[str], *, env_file: str, volumes: tuple[str, ...] = (),
             terminal: bool = False) -> list[str]:
    """A one-off command in a fresh container of the service's image (removed when it exits); with
    ``terminal``, interactive on a pseudo-terminal (``-i -t``)."""
    argv = ["docker", "run", "--rm", *(["-i", "-t"] if terminal else []), "--network", "host", "--env-file", env_file]
    for volume in volumes:
        argv += ["--volume", f"{volume}:{volume}"]
    return argv + [image, *command]


def run_sourcing(name: str, image: str, command: list[str], *, env_path: str) -> list[str]:
    """``command`` in a container ``name`` of ``image`` (kept, to be committed), through the image's entrypoint
    as the services' commands are, with the environment of the shell file ``env_path`` on the host, mounted
    read only and sourced by /bin/sh: nothing of it in the container's configuration, so nothing of it in
    an image committed from it."""
    inside = "/run/lifeboat-build.env"
    return ["docker", "run", "--name", name, "--network", "host", "--volume", f"{env_path}:{inside}:ro", image,
            "/bin/sh", "-c", f'set -a && . {inside} && set +a && exec "$@"', "lifeboat-build", *command]


def commit(name: str, tag: str, *, cmd: list[str] | None, label: str) -> list[str]:
    """Container ``name`` as image ``tag``, with the image's own command back (``cmd``, none is ``[]``) and
    ``label=1`` (its entrypoint was never changed)."""
    import json

    return ["docker", "commit", "--change", f"CMD {json.dumps(cmd or [])}", "--change", f"LABEL {label}=1", name, tag]


def image_config(tag: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{json .Config}}", tag]


def image_label(tag: str, label: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag]


def rename(name: str, new: str) -> list[str]:
    return ["docker", "rename", name, new]


def stop(name: str, *, timeout: int = 10) -> list[str]:
    return ["docker", "stop", "--time", str(timeout), name]


def start(name: str) -> list[str]:
    return ["docker", "start", name]


def remove(name: str) -> list[str]:
    return ["docker", "rm", "--force", name]


def list_containers(stack: str) -> list[str]:
    """One JSON object per line: name, state and labels of the stack's containers (running or not)."""
    return ["docker", "ps", "--all", "--no-trunc", "--filter", f"label={LABEL}={stack}", "--format",
            '{"name":{{json .Names}},"state":{{json .State}},"labels":{{json .Labels}}}']


def remove_image(tag: str) -> list[str]:
    return ["docker", "image", "rm", "--force", tag]


def list_images(stack: str, service: str) -> list[str]:
    return ["docker", "image", "ls", "--format", "{{.Tag}}", f"lifeboat/{stack}-{service}"]


def logs(name: str, *, tail: int = 40) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), name]


def env_file(env: dict[str, str]) -> bytes:
    """docker's --env-file format: KEY=VALUE per line, taken literally (no quotes, no newlines)."""
    lines = []
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"environment value of {key} has a line break, which --env-file cannot carry")
        lines.append(f"{key}={value}")
    return ("\n".join(lines) + "\n").encode()
