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


def run_once(image: str, command: list[str], *, env_file: str, volumes: tuple[str, ...] = ()) -> list[str]:
    """A one-off command in a fresh container of the service's image (removed when it exits)."""
    argv = ["docker", "run", "--rm", "--network", "host", "--env-file", env_file]
    for volume in volumes:
        argv += ["--volume", f"{volume}:{volume}"]
    return argv + [image, *command]


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
