"""The shipped CI workflow (templates/ci/github-actions.yml) and its shell twin (templates/ci/lifeboat-ci.sh)
run as written against LocalStack 4.13.1 in host mode (issue 26), so neither can rot. A module of its own:
beside test_aws_localstack.py's deployment (the same subnets in another VPC) LocalStack answered this stack's
subnets with InvalidSubnet.Conflict, so it runs after that one is gone, as a CI job runs alone."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

from .conftest import aws_environment, environment, make_host_roots
from .test_aws_localstack import LAB, aws, write_stack

pytestmark = pytest.mark.timeout(1800)  # two deployments with Terraform against the emulator


@pytest.fixture
def env(terraform_rc):
    with environment(aws_environment(terraform_rc)) as values:
        yield values


def test_the_shipped_workflow_runs_as_written(tmp_path, ssh_lab, localstack, env):
    """templates/ci/github-actions.yml, its `run:` steps in order as GitHub runs them (bash -e), with the
    job's environment (its AWS_ENDPOINT_URL pointed at this LocalStack), in a folder holding a stack whose aws
    target takes its endpoint from that variable and whose PostgreSQL is on the instance. The step that
    installs Lifeboat is skipped: this checkout's is on PATH. Then templates/ci/lifeboat-ci.sh, the same
    steps for other CI systems, on the same stack."""
    import subprocess
    import sys

    from ruamel.yaml import YAML

    from .conftest import REPO

    workflow = YAML(typ="safe").load((REPO / "templates" / "ci" / "github-actions.yml").read_text())
    job = workflow["jobs"]["dry-run"]
    steps = [s for s in job["steps"] if "run" in s]
    assert [s["name"] for s in steps][0] == "install lifeboat" and steps[-1]["name"] == "destroy"
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "lifeboat").write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m toolkit.cli \"$@\"\n")
    (shims / "lifeboat").chmod(0o755)
    job_env = {**os.environ, **{k: str(v) for k, v in job["env"].items()}, "AWS_ENDPOINT_URL": localstack.url,
               "PATH": f"{shims}:{os.environ['PATH']}"}
    job_env.pop("AWS_DEFAULT_REGION", None)
    roots = make_host_roots()
    work = tmp_path / "repo"
    work.mkdir()
    write_stack(work, ssh_lab, localstack.url, roots, name="lsw", web_port=8310, pg_port=5473, in_env=True)

    def run(script: str, *shell: str) -> subprocess.CompletedProcess:
        return subprocess.run([*shell, script], cwd=work, env=job_env, capture_output=True, text=True, timeout=900)

    def written() -> dict:
        """What the steps wrote (their envelopes), for a failure's message."""
        return {p.name: p.read_text()[-2000:] for p in sorted(work.glob("*.json"))}

    def gone() -> bool:
        return not aws("ec2", localstack.url).describe_vpcs(
            Filters=[{"Name": "tag:lifeboat:stack", "Values": ["lsw-ci"]}])["Vpcs"]

    try:
        for step in steps[1:-1]:
            done = run(step["run"], "bash", "-e", "-c")
            assert done.returncode == 0, (step["name"], written(), done.stderr[-3000:])
            if step["name"] == "up":
                with urllib.request.urlopen(f"http://{LAB[2]}:8310/", timeout=5) as resp:  # noqa: S310
                    assert resp.read() == b"ok"
        plan = json.loads((work / "plan.json").read_text())
        assert plan["exit_code"] == 10 and plan["data"]["summary"]["create"] > 0, plan["data"]["summary"]
        assert json.loads((work / "up.json").read_text())["data"]["status"]["healthy"]
        assert json.loads((work / "plan-again.json").read_text())["exit_code"] == 0
        done = run(steps[-1]["run"], "bash", "-e", "-c")
        assert done.returncode == 0 and gone(), (done.stdout[-3000:], done.stderr[-3000:])

        script = run(str(REPO / "templates" / "ci" / "lifeboat-ci.sh"), "sh")
        assert script.returncode == 0, (written(), script.stderr[-3000:])
        assert json.loads((work / "plan-again.json").read_text())["exit_code"] == 0
        assert json.loads((work / "destroy.json").read_text())["exit_code"] == 0 and gone()
        assert not list(roots.iterdir())
    finally:
        if not gone():
            run(steps[-1]["run"], "bash", "-c")
        shutil.rmtree(roots, ignore_errors=True)
