"""Docker command builders tested as exact argv."""

from toolkit.commands import dockercmd


def test_run_argv_is_exact():
    assert dockercmd.run("lifeboat-s-h-web-0", "lifeboat/s-web:abc", ["python", "-m", "app"],
                         env_file="/srv/c/web.0.env", stack="s", service="web", replica=0, generation="abc:def",
                         volumes=("/srv/objects",)) == [
        "docker", "run", "--detach", "--name", "lifeboat-s-h-web-0", "--network", "host",
        "--restart", "unless-stopped", "--env-file", "/srv/c/web.0.env", "--log-opt", "max-size=10m",
        "--label", "lifeboat.stack=s", "--label", "lifeboat.stack.service=web", "--label", "lifeboat.stack.replica=0",
        "--label", "lifeboat.stack.generation=abc:def", "--volume", "/srv/objects:/srv/objects",
        "lifeboat/s-web:abc", "python", "-m", "app"]


def test_build_save_load_argv():
    assert dockercmd.build("lifeboat/s-web:abc", "/srv/r/web/abc", base_image="base:1") == [
        "docker", "build", "--network", "host", "--label", "lifeboat.stack.release=abc", "-t", "lifeboat/s-web:abc",
        "--build-arg", "BASE=base:1", "/srv/r/web/abc"]
    assert dockercmd.save("t:1") == ["docker", "save", "t:1"]
    assert dockercmd.load() == ["docker", "load", "--quiet"]
    assert dockercmd.stop("n", timeout=5) == ["docker", "stop", "--time", "5", "n"]


def test_env_file_refuses_line_breaks():
    assert dockercmd.env_file({"A": "1", "B": "x y=z"}) == b"A=1\nB=x y=z\n"
    import pytest

    with pytest.raises(ValueError):
        dockercmd.env_file({"A": "line\nbreak"})


def test_build_step_argv_keeps_the_environment_out_of_the_image():
    argv = dockercmd.run_sourcing("b1", "lifeboat/s-web:abc", ["python", "manage.py", "collectstatic"],
                                  env_path="/srv/r/containers/build-1.env")
    assert "--env-file" not in argv and "-e" not in argv and "--entrypoint" not in argv
    assert argv[argv.index("--volume") + 1] == "/srv/r/containers/build-1.env:/run/lifeboat-build.env:ro"
    assert argv[argv.index("lifeboat/s-web:abc") + 1:] == [
        "/bin/sh", "-c", 'set -a && . /run/lifeboat-build.env && set +a && exec "$@"', "lifeboat-build",
        "python", "manage.py", "collectstatic"]
    assert dockercmd.commit("b1", "lifeboat/s-web:abc", cmd=None, label="lifeboat.stack.built") == [
        "docker", "commit", "--change", "CMD []", "--change", "LABEL lifeboat.stack.built=1", "b1", "lifeboat/s-web:abc"]
    assert dockercmd.commit("b1", "t:1", cmd=["python", "-m", "app"], label="x")[3] == 'CMD ["python", "-m", "app"]'
