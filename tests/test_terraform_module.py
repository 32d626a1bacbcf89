"""`type: terraform`: a Terraform module of the user's as a provider. The test module (tests/tfhosts) is
built on the builtin terraform_data resource (no provider download) and reports real OpenSSH hosts on
loopback through the output contract, and (object_store: module) an Azurite or fake-gcs-server store for
the buckets; chirp migrates from this machine onto one such target (the module applied by the migration's
prepare step), then to the other, and `destroy` cleans the hosts and destroys the modules."""

from __future__ import annotations

import datetime
import json
import shutil
import urllib.request
from pathlib import Path

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import REPO, chirp_stack, make_host_roots, run_cli
from .test_migrate_local import objects, rows

MODULE = REPO / "tests" / "tfhosts"


def target(lab, roots: Path) -> str:
    web1, web2, db1 = lab.hosts[:3]
    return f"""  tf:
    type: terraform
    module: {MODULE}
    state_dir: state/tf
    key: {lab.client_key}
    known_hosts: {lab.known_hosts}
    ssh_user: {lab.user}
    postgres_port: 5451
    redis_port: 6402
    variables:
      user: {lab.user}
      web1: "{web1.address}:{web1.port}"
      web2: "{web2.address}:{web2.port}"
      db1: "{db1.address}:{db1.port}"
    hosts:
      - {{name: web1, roles: [web, worker, storage], root: {roots}/tf-web1}}
      - {{name: web2, roles: [web], root: {roots}/tf-web2}}
      - {{name: db1, roles: [db], root: {roots}/tf-db1}}
"""


def test_module_contract_is_checked(tmp_path):
    from providers.tfmodule import module_contract

    assert module_contract(MODULE) == []
    assert module_contract(REPO / "tests" / "tfmodule")  # a module that is not a Lifeboat provider
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "main.tf").write_text((MODULE / "main.tf").read_text().split('output "lifeboat_dns"')[0] + """
output "lifeboat_dns" {
  value = {
    type      = "hetzner-dns"
    token     = "literal"
  }
}
""")
    assert module_contract(bad) == ['output "lifeboat_dns": "token" is not a setting of a hetzner-dns target']
    (bad / "main.tf").write_text((bad / "main.tf").read_text().replace("hetzner-dns", "route66"))
    assert module_contract(bad)[0].startswith('output "lifeboat_dns" needs type = one of digitalocean-dns')


def test_shipped_cloud_modules_are_formatted_and_follow_the_contract(terraform_rc):
    """Hetzner and DigitalOcean modules: their providers cannot be downloaded here, so they are checked by
    `terraform fmt -check` and against the contract, not applied (the README says so)."""
    import subprocess

    from providers.tfmodule import module_contract

    for cloud in ("hetzner", "digitalocean"):
        module = REPO / "templates" / "terraform" / cloud
        fmt = subprocess.run(["terraform", "fmt", "-check", "-diff", str(module)], capture_output=True, text=True)
        assert fmt.returncode == 0, fmt.stdout + fmt.stderr
        assert module_contract(module) == [], cloud
        text = (module / "main.tf").read_text()
        for variable in ("hosts", "db_hosts", "admin_cidrs"):
            assert f'variable "{variable}"' in text, (cloud, variable)
        assert "host_keys" in text and "ssh_deletekeys" in text  # keys pinned, not trusted on first use
        assert f'type      = "{cloud}-dns"' in text  # the cloud's DNS, through Lifeboat's API adapter


def cloud_target(name: str, lab, roots: Path, *, web: str, pg_port: int, redis_port: int, store: dict) -> str:
    """A module target whose buckets live in the object store its output names (object_store: module)."""
    web1, web2, db1 = lab.hosts[:3]
    return f"""  {name}:
    type: terraform
    module: {MODULE}
    state_dir: state/{name}
    key: {lab.client_key}
    known_hosts: {lab.known_hosts}
    ssh_user: {lab.user}
    postgres_port: {pg_port}
    redis_port: {redis_port}
    object_store: module
    variables:
      user: {lab.user}
      web1: "{web1.address}:{web1.port}"
      web2: "{web2.address}:{web2.port}"
      db1: "{db1.address}:{db1.port}"
      object_store: '{json.dumps(store)}'
    hosts:
      - {{name: {web}, roles: [web, worker], root: {roots}/{name}-{web}}}
      - {{name: db1, roles: [db], root: {roots}/{name}-db1}}
"""


def test_chirp_moves_onto_an_azure_backed_module_then_to_a_gcs_backed_one(tmp_path, ssh_lab, terraform_rc, azurite,
                                                                    fake_gcs, monkeypatch):
    """Two module targets whose buckets live in their clouds' object stores (Azurite, fake-gcs-server):
    chirp migrates from this machine onto the first (the plan shows the module's resources; the migration
    applies it), takes an upload through its own Azure code there, then migrates to the second (services
    and database between their SSH hosts, media Azure -> GCS); rclone, with its own Azure and GCS code,
    downloads every object on both sides and finds them equal; both are destroyed, module and state too."""
    from .azurelab import ACCOUNT, KEY
    from .conftest import CHIRP, aws_environment
    from .rclonelab import rclone, write_config

    app = tmp_path / "chirp-app"
    shutil.copytree(CHIRP, app, ignore=shutil.ignore_patterns("__pycache__"))
    with (app / "requirements.txt").open("a") as extra:  # what an app keeping media on Azure or GCS adds
        extra.write("azure-storage-blob>=12.19\ngoogle-cloud-storage>=2.14\n")
    roots = make_host_roots()
    targets = (cloud_target("azcloud", ssh_lab, roots, web="web1", pg_port=5455, redis_port=6406,
                            store={"type": "azure-blob", "account": ACCOUNT, "endpoint_url": azurite.url,
                                   "key_env": "LB_TEST_AZURE_KEY"})
               + cloud_target("gcloud", ssh_lab, roots, web="web2", pg_port=5456, redis_port=6407,
                              store={"type": "gcs", "project": "lifeboat-test", "endpoint_url": fake_gcs.url}))
    stack = chirp_stack(tmp_path, target="here", extra_target=targets, dns=False)
    stack.write_text(stack.read_text().replace(f"build: {CHIRP}", f"build: {app}"))
    env = {"TF_CLI_CONFIG_FILE": aws_environment(terraform_rc)["TF_CLI_CONFIG_FILE"], "TF_IN_AUTOMATION": "1",
           "LB_TEST_AZURE_KEY": KEY}
    monkeypatch.setenv("LB_TEST_AZURE_KEY", KEY)  # this process reads the stores too
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    web1, web2 = ssh_lab.hosts[0], ssh_lab.hosts[1]
    try:
        assert run_cli(*lb, "up", "--on", "here").code == 0
        seed = run_cli("-c", str(stack), "exec", "--on", "here", "web", "--", "python", "-m", "chirp", "seed",
                       "--users", "20", "--posts", "150", "--media", "9", "--large-mb", "3")
        assert seed.code == 0, seed
        plan = run_cli(*lb, "plan", "--on", "azcloud", env=env)
        assert plan.code == 0, plan
        planned = {(c["kind"], c["name"]) for c in plan.envelope["data"]["changes"] if c["action"] == "create"}
        assert {("infra", 'terraform_data.host["web1"]'), ("infra", 'terraform_data.host["db1"]'),
                ("service", "web"), ("database", "chirp"), ("bucket", "media")} <= planned, planned

        # Onto the first module target (the module applied by the migration's prepare step).
        onto = run_cli(*lb, "migrate", "--from", "here", "--to", "azcloud", env=env)
        assert onto.code == 0, onto
        assert (stack.parent / "state" / "azcloud" / "terraform" / "terraform.tfstate").exists()
        status = run_cli(*lb, "status", "--on", "azcloud", env=env)
        assert status.code == 0 and status.envelope["data"]["healthy"], status
        assert run_cli(*lb, "destroy", "--on", "here").code == 0
        upload = urllib.request.Request(f"http://{web1.address}:8000/api/media?name=caf%C3%A9%20upload.bin",
                                        data=bytes(range(256)) * 4099, method="POST",
                                        headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(upload, timeout=30) as resp:  # noqa: S310 - lab host on loopback
            uploaded = json.loads(resp.read())

        engine = Engine(stackfile.load(stack))
        old = engine.provider("azcloud")
        assert not [h for h in old.specs if h.has("storage")]
        container = old.module_store().names()["media"]
        assert len(objects(old.objects())) == 10

        moved = run_cli(*lb, "migrate", "--from", "azcloud", "--to", "gcloud", env=env)
        assert moved.code == 0, moved
        report = {s["step"]: s for s in moved.envelope["data"]["steps"]}
        assert report["media"]["copied"] == 10, report["media"]

        engine = Engine(stackfile.load(stack))
        old, new = engine.provider("azcloud"), engine.provider("gcloud")
        assert rows(old) == rows(new)
        assert objects(old.objects()) == objects(new.objects())
        bucket = new.module_store().names()["media"]

        # rclone, not Lifeboat, reads both clouds' stores and compares every object's bytes (rclone 1.60
        # reaches an Azure emulator on another port only through a SAS URL).
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        sas = generate_container_sas(ACCOUNT, container, account_key=KEY, expiry=expiry,
                                     permission=ContainerSasPermissions(read=True, list=True))
        config = write_config(tmp_path / "rclone.conf", {
            "az": {"type": "azureblob", "sas_url": f"{azurite.url}/{container}?{sas}"},
            "gs": {"type": "gcs", "anonymous": "true", "endpoint": f"{fake_gcs.url}/storage/v1/",
                   "project_number": "lifeboat-test"}})
        rclone(config, "check", "--download", f"az:{container}", f"gs:{bucket}")
        for remote in (f"az:{container}", f"gs:{bucket}"):
            listed = rclone(config, "lsf", "-R", "--files-only", remote).splitlines()
            assert len(listed) == 10 and uploaded["key"] in listed, (remote, listed)

        # chirp on the new hosts serves the media from GCS, byte for byte.
        from urllib.parse import quote

        with urllib.request.urlopen(f"http://{web2.address}:8000/media/{quote(uploaded['key'])}",  # noqa: S310
                                    timeout=30) as resp:
            assert resp.read() == bytes(range(256)) * 4099
        with urllib.request.urlopen(f"http://{web2.address}:8000/api/stats", timeout=10) as resp:  # noqa: S310
            assert json.loads(resp.read())["media"] == 10
        status = run_cli(*lb, "status", "--on", "gcloud", env=env)
        assert status.code == 0 and status.envelope["data"]["healthy"], status

        for name in ("gcloud", "azcloud"):
            gone = run_cli(*lb, "destroy", "--on", name, env=env)
            assert gone.code == 0, gone
            assert not (stack.parent / "state" / name).exists()  # module destroyed, its state folder gone
        assert not [p for p in roots.iterdir() if p.name.startswith(("azcloud-", "gcloud-"))]
        assert container not in old.module_store().bucket_names_there()
        assert bucket not in new.module_store().bucket_names_there()
    finally:
        for name in ("gcloud", "azcloud", "here"):
            run_cli(*lb, "destroy", "--on", name, env=env)
        shutil.rmtree(roots, ignore_errors=True)


def test_the_object_store_output_is_checked_like_a_stack_entry(tmp_path, monkeypatch):
    """What the module's lifeboat_object_store output says is validated by the store type's own schema;
    a problem names the module and the key. (Outputs set directly: no Terraform needed for the check.)"""
    import pytest

    from toolkit.errors import BadInput

    stack = chirp_stack(tmp_path, target="here", dns=False, extra_target=f"""  cloud:
    type: terraform
    module: {MODULE}
    object_store: module
    hosts: [{{name: web1, roles: [web, worker]}}, {{name: db1, roles: [db]}}]
""")
    provider = Engine(stackfile.load(stack)).provider("cloud")
    for output, words in (({"type": "ftp"}, "type: expected one of s3, azure-blob, gcs"),
                          ({"type": "gcs", "projekt": "lifeboat-test"}, "lifeboat_object_store.projekt"),
                          ({"type": "s3"}, "lifeboat_object_store: missing required key \"endpoint_url\"")):
        provider._outputs, provider._store = {"lifeboat_object_store": output}, None
        with pytest.raises(BadInput) as problem:
            provider.objects()
        assert words in problem.value.message and str(MODULE) in problem.value.message, problem.value.message
    monkeypatch.setenv("LB_TEST_SPACES_KEY", "key-id")
    monkeypatch.setenv("LB_TEST_SPACES_SECRET", "the-secret")
    provider._outputs, provider._store = {"lifeboat_object_store": {
        "type": "s3", "endpoint_url": "https://fra1.digitaloceanspaces.com", "region": "fra1",
        "access_key_env": "LB_TEST_SPACES_KEY", "secret_key_env": "LB_TEST_SPACES_SECRET"}}, None
    assert not provider.media_on_hosts() and not provider.gateway_needed()
    env = provider.bucket_env(provider.spec("web1"))
    assert env == {"BUCKET_MEDIA_URL": "s3://chirp-cloud-media",
                   "BUCKET_MEDIA_ENDPOINT": "https://fra1.digitaloceanspaces.com", "BUCKET_MEDIA_REGION": "fra1", "BUCKET_MEDIA_ACCESS_KEY_ID": "key-id",
                   "BUCKET_MEDIA_SECRET_ACCESS_KEY": "the-secret"}
