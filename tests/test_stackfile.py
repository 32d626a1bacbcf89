"""Stack file validation: every bad file names file, line, key and what was expected; exit 2; no
traceback; nothing changed."""

from __future__ import annotations

import hashlib
import os

import pytest

from toolkit.config import stackfile
from toolkit.errors import StackFileError

from .conftest import STACKFILES, run_cli

BAD = STACKFILES / "bad"

# file -> (line, key path or None, substring of the message, substring of the hint or None)
CASES = {
    "yaml-syntax.yml": (10, None, "not valid YAML", "indentation"),
    "duplicate-key.yml": (10, "port", 'key "port" appears twice', "keep one"),
    "empty.yml": (1, None, "the file is empty", "lifeboat init"),
    "top-level-list.yml": (1, None, "expected a stack", None),
    "unknown-top-key.yml": (4, "servces", "unknown key", 'did you mean "services"'),
    "missing-name.yml": (1, None, 'missing required key "name"', None),
    "bad-name.yml": (2, "name", 'got "Chirp_App"', None),
    "service-typo.yml": (8, "services.web.comand", "unknown key", 'did you mean "command"'),
    "replicas-word.yml": (10, "services.web.replicas", 'expected a whole number from 1 to 100, got "two"', None),
    "replicas-zero.yml": (10, "services.web.replicas", "got 0", None),
    "image-and-build.yml": (6, "services.web", 'exactly one of "image"', None),
    "web-without-port.yml": (6, "services.web", 'needs "port"', None),
    "port-range.yml": (9, "services.web.port", "from 1 to 65535, got 70000", None),
    "bad-role.yml": (6, "services.web.role", "expected one of web, worker", None),
    "health-no-slash.yml": (10, "services.web.health", 'starting with "/"', None),
    "secret-value.yml": (25, "secrets.CHIRP_SECRET_KEY.value", "never live in the stack file", None),
    "undeclared-secret.yml": (11, "services.web.secrets[0]", "is not declared", 'did you mean "CHIRP_SECRET_KEY"'),
    "provider-type-typo.yml": (28, "providers.here.type", "expected a provider type", 'did you mean "local"'),
    "provider-setting-typo.yml": (29, "providers.here.state_dri", "unknown key", 'did you mean "state_dir"'),
    "dns-provider-unknown.yml": (30, "dns.provider", '"cloudflare" is not a target', "targets: here"),
    "domain-outside-zone.yml": (31, "dns.zone", "is not inside the zone", None),
    "postgres-version.yml": (17, "postgres.version", "from 12 to 18, got 9", None),
    "env-injected.yml": (11, "services.web.env.DATABASE_URL", "set by Lifeboat", None),
    "tls-both.yml": (23, "tls", 'exactly one of "acme_email"', None),
    "backup-duration.yml": (36, "backup.every", 'got "15 minutes"', None),
    "backup-key-generated.yml": (38, "backup.encrypt_with", "comes from generate", "from: env or from: file"),
    "backup-bucket-is-media.yml": (37, "backup.bucket", "one of the stack's own buckets", None),
    "backup-to-dns-only.yml": (39, "backup.to", "offers no object store", None),
    "record-target-and-values.yml": (33, "dns.records[0]", 'exactly one of "values"', None),
    "secret-file-no-path.yml": (25, "secrets.CHIRP_SECRET_KEY", 'needs "path"', None),
    "future-version.yml": (1, "version", "version 1, got 2", "upgrade"),
    "worker-health.yml": (16, "services.worker.health", "no health check path", None),
    "no-providers.yml": (26, "providers", "at least 1 entry", None),
    "command-quote.yml": (15, "services.worker.command", "No closing quotation", "list of arguments"),
    "build-missing.yml": (14, "services.worker.build", "is not a directory", None),
    "bucket-name.yml": (23, "buckets.Media_Files", "bucket name", None),
    "record-cname-target.yml": (33, "dns.records[0]", "must be A or AAAA, not CNAME", None),
    "extension-list.yml": (19, "postgres.extensions", 'got "pg_trgm"', None),
    "not-utf8.yml": (3, None, "not valid UTF-8", None),
}


def test_every_bad_file_has_a_case():
    assert sorted(p.name for p in BAD.glob("*.yml")) == sorted(CASES)
    assert len(CASES) >= 20


def digest_tree(path) -> str:
    h = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(full.encode())
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_json(name):
    line, key, message, hint = CASES[name]
    path = BAD / name
    before = digest_tree(BAD)
    result = run_cli("--config", str(path), "--output", "json", "validate")
    assert result.code == 2, result
    env = result.envelope
    assert env["lifeboat"] == 1 and env["command"] == "validate"
    assert env["status"] == "error" and env["exit_code"] == 2
    first = env["errors"][0]
    assert first["code"].startswith("stack."), first
    assert first["file"] == str(path)
    assert first["line"] == line, first
    assert first.get("key") == key, first
    assert message in first["message"], first
    assert first["message"].startswith(f"{path}:{line}"), first
    if hint:
        assert hint in (first["hint"] or ""), first
    assert "Traceback" not in result.stderr
    assert digest_tree(BAD) == before  # nothing written next to the file
    assert not (BAD / ".lifeboat").exists()


@pytest.mark.parametrize("name", ["service-typo.yml", "yaml-syntax.yml", "secret-value.yml", "not-utf8.yml"])
def test_bad_file_human(name):
    result = run_cli("--config", str(BAD / name), "validate")
    assert result.code == 2
    assert result.stdout == ""
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert f"{name}:{CASES[name][0]}" in result.stderr


def test_secret_value_is_not_echoed():
    result = run_cli("--config", str(BAD / "secret-value.yml"), "-o", "json", "validate")
    assert "hunter2" not in result.stdout + result.stderr


def test_all_problems_reported_at_once(tmp_path):
    text = (BAD / "replicas-word.yml").read_text().replace("    role: worker\n", "    role: wrker\n")
    path = tmp_path / "lifeboat.yml"
    path.write_text(text)
    with pytest.raises(StackFileError) as info:
        stackfile.load(path)
    keys = [p.key for p in info.value.problems]
    assert keys == ["services.web.replicas", "services.worker.role"]


def test_missing_file(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.yml"), "-o", "json", "validate")
    assert result.code == 2
    assert result.envelope["errors"][0]["code"] == "stack.missing"
    assert "lifeboat init" in result.envelope["errors"][0]["hint"]
    (tmp_path / "a-file").write_text("")
    under_a_file = run_cli("--config", str(tmp_path / "a-file" / "lifeboat.yml"), "-o", "json", "validate")
    assert under_a_file.code == 2 and under_a_file.envelope["errors"][0]["code"] == "stack.missing", under_a_file


def test_good_files_load():
    stack = stackfile.load(STACKFILES / "good" / "chirp.yml")
    assert stack.name == "chirp"
    assert stack.services["web"].command == ("python", "-m", "chirp", "web")
    assert stack.postgres.user == "chirp"
    assert stack.secrets["CHIRP_SECRET_KEY"].source == "generate"
    assert stack.dns.records[0].ttl == 300


def test_init_template_validates_and_string_commands_split():
    from toolkit.paths import example_stack

    stack = stackfile.load(example_stack())
    assert set(stack.services) == {"web", "streaming", "worker"}
    assert stack.secrets["SMTP_PASSWORD"].var == "SOCIAL_SMTP_PASSWORD"
    assert stack.backup.every == 900


def test_env_values_keep_their_text(tmp_path):
    text = (STACKFILES / "good" / "chirp.yml").read_text().replace(
        'CHIRP_WORKERS: "2"', "CHIRP_WORKERS: 2\n      DEBUG: false\n      RATIO: 0.5")
    text = text.replace("../../../examples/chirp", str((STACKFILES / "good" / "../../../examples/chirp").resolve()))
    path = tmp_path / "lifeboat.yml"
    path.write_text(text)
    env = stackfile.load(path).services["web"].env
    assert env == {"CHIRP_WORKERS": "2", "DEBUG": "false", "RATIO": "0.5"}


def test_services_built_from_one_folder_share_its_build_command(tmp_path):
    """A Procfile's processes are one build: the worker gets the collectstatic its web service declares
    (Takahe's worker crashed at import without the static manifest), unless it gives its own."""
    (tmp_path / "app").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "lifeboat.yml").write_text("""version: 1
name: shared
domain: shared.lifeboat.test
services:
  web: {role: web, build: app, command: [gunicorn], port: 8000, build_command: [python, manage.py, collectstatic]}
  worker: {role: worker, build: app, command: [python, manage.py, runworker]}
  beat: {role: worker, build: app, command: [celery, beat], build_command: [make, themes]}
  mailer: {role: worker, build: other, command: [python, mail.py]}
providers:
  here: {type: local}
""")
    services = stackfile.load(tmp_path / "lifeboat.yml").services
    assert services["web"].build_command == ("python", "manage.py", "collectstatic")
    assert services["beat"].build_command == ("make", "themes")
    assert services["mailer"].build_command is None
    # two different commands from one folder: which one a service without its own takes is not guessed
    assert services["worker"].build_command is None
    (tmp_path / "lifeboat.yml").write_text((tmp_path / "lifeboat.yml").read_text().replace(
        ", build_command: [make, themes]", ""))
    services = stackfile.load(tmp_path / "lifeboat.yml").services
    assert services["worker"].build_command == services["beat"].build_command == ("python", "manage.py", "collectstatic")


def test_served_paths_are_read_and_checked(tmp_path):
    """serve: on a web service: a release folder or a bucket, the prefix ending in /; a bucket the stack does
    not have, a worker serving, / itself, a release folder of an image service: each named by line and key."""
    (tmp_path / "app").mkdir()
    stack = tmp_path / "lifeboat.yml"
    base = """version: 1
name: served
domain: served.lifeboat.test
services:
  web:
    role: web
    build: app
    command: [gunicorn]
    port: 8000
    serve:
      /static/: static/dist
      /media: {bucket: media}
      /attachments/: {bucket: media, prefix: attachments/}
%s
buckets:
  media: {}
providers:
  here: {type: local}
"""
    stack.write_text(base % "")
    assert stackfile.load(stack).services["web"].serve == (("/static/", "release", "static/dist"),
                                                            ("/media/", "bucket", "media/"),
                                                            ("/attachments/", "bucket", "media/attachments/"))
    stack.write_text(base.replace("      /media: {bucket: media}\n", "      /media: {bucket: media}\n"
                                  "      /x/: ../etc\n") % "")
    with pytest.raises(StackFileError) as failed:
        stackfile.load(stack)
    assert [(p.line, p.key) for p in failed.value.problems] == [(13, "services.web.serve./x/")]
    assert "a folder of the release" in failed.value.problems[0].message
    stack.write_text(base.replace("      /media: {bucket: media}\n", "      /media: {bucket: media}\n"
                                  "      /: static\n") % """  worker:
    role: worker
    image: busybox
    command: [sleep, "1"]
    serve: {/a/: {bucket: media}}
  api:
    role: web
    image: busybox
    port: 9000
    command: [sleep, "1"]
    serve: {/files/: files}""")
    with pytest.raises(StackFileError) as failed:
        stackfile.load(stack)
    found = {(p.line, p.key): p.message for p in failed.value.problems}
    assert any(k == "services.web.serve./" and "every request" in m for (_, k), m in found.items()), found
    assert any(k == "services.worker.serve" and "worker serves no HTTP" in m for (_, k), m in found.items()), found
    assert any(k == "services.api.serve./files/" and "runs an image" in m for (_, k), m in found.items()), found
    stack.write_text(base.replace("      /media: {bucket: media}\n", "      /media: {bucket: media}\n"
                                  "      /img/: {bucket: images}\n      /media/: static\n") % "")
    with pytest.raises(StackFileError) as failed:
        stackfile.load(stack)
    found = {(p.line, p.key): p.message for p in failed.value.problems}
    assert 'bucket "images" is not one of' in found[(13, "services.web.serve./img/")], found
    assert "served twice (also as /media of web)" in found[(14, "services.web.serve./media/")], found


@pytest.mark.parametrize("name, text, code, line", [
    ("deep-flow", "version: 1\nname: " + "[" * 400 + "]" * 400 + "\n", "stack.too_deep", 2),
    ("deep-block", "".join("  " * i + f"k{i}:\n" for i in range(320)) + "  " * 320 + "v: 1\n", "stack.too_deep", 65),
    ("long-number", "version: 1\nname: x\nreplicas: " + "9" * 5000 + "\n", "stack.number_too_long", 3),
    ("control-character", "version: 1\nname: a\x01b\n", "stack.yaml", 2),
    ("aliases", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)), "stack.too_large", None),
])
def test_a_stack_file_that_used_to_crash_the_loader_is_exit_2_naming_file_and_line(tmp_path, name, text, code, line):
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    result = run_cli("-c", str(path), "-o", "json", "validate", timeout=30)
    assert result.code == 2, result
    error = result.envelope["errors"][0]
    assert error["code"] == code and error["file"] == str(path), error
    assert error.get("line") == line, error
    assert "Traceback" not in result.stderr


def test_a_lone_surrogate_in_a_value_still_gives_one_json_envelope(tmp_path):
    path = tmp_path / "surrogate.yml"
    path.write_text('version: 1\nname: "\\ud800"\n')
    result = run_cli("-c", str(path), "-o", "json", "validate", timeout=30)
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert result.envelope["errors"][0]["line"] == 2
    human = run_cli("-c", str(path), "validate", timeout=30)
    assert human.code == 2 and "Traceback" not in human.stderr and "name:" in human.stderr, human


def test_a_fifo_or_a_directory_as_the_stack_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.yml"
    os.mkfifo(fifo)
    result = run_cli("-c", str(fifo), "-o", "json", "validate", timeout=30)  # used to wait for a writer forever
    assert result.code == 2, result
    assert result.envelope["errors"][0]["code"] == "stack.not_a_file"
    assert result.envelope["errors"][0]["file"] == str(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    result = run_cli("-c", str(folder), "-o", "json", "validate", timeout=30)
    assert result.code == 2 and result.envelope["errors"][0]["file"] == str(folder), result
    assert "is a directory" in result.envelope["errors"][0]["message"]
