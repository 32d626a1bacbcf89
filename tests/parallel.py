"""`make test`: the whole suite as two pytest runs side by side, so it stays well inside CI's time on 2 cores.

The AWS group (moto and LocalStack with Terraform applying for real) spends most of its time waiting: the
aws Terraform provider sleeps a minute or more around every RDS instance it makes or deletes, whatever the
emulator answers. It runs in a pytest of its own, beside everything else, on lab hosts of its own
(127.0.0.12-14, LIFEBOAT_TEST_LAB) so that the services both groups deploy never share an address; the
other group keeps the usual 127.0.0.2-4. Its output is printed when the other group has finished; the
exit status is the first failure's (0 only when both passed).

    python tests/parallel.py [PYTEST ARGS...]     (make test)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AWS_GROUP = ["tests/test_aws_localstack.py", "tests/test_ci_workflow.py", "tests/test_aws_moto.py",
             "tests/test_migrate_aws.py", "tests/test_takahe_aws.py"]
AWS_LAB = "12"  # the AWS group's lab hosts: 127.0.0.12, .13, .14


def main(extra: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15", *extra]
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix="lifeboat-test-aws-", suffix=".log", delete=False) as log:
        aws = subprocess.Popen([*pytest, *AWS_GROUP], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "LIFEBOAT_TEST_LAB": AWS_LAB}, start_new_session=True)
    print(f"make test: the AWS group ({', '.join(Path(t).name for t in AWS_GROUP)}) runs alongside, "
          f"output in {log.name}", flush=True)
    try:
        rest = subprocess.run([*pytest, "tests", *[f"--ignore={t}" for t in AWS_GROUP]], cwd=REPO).returncode
        rest_seconds = time.monotonic() - started
        print(f"\nmake test: the other tests finished (exit {rest}, {rest_seconds:.0f} s); waiting for the AWS "
              "group", flush=True)
        code = aws.wait()
    except BaseException:
        os.killpg(aws.pid, signal.SIGTERM)
        aws.wait()
        raise
    print(f"\n---------------- AWS group (lab hosts from 127.0.0.{AWS_LAB}) ----------------")
    print(Path(log.name).read_text(errors="replace"), end="")
    Path(log.name).unlink()
    total = time.monotonic() - started
    print(f"\nmake test: other tests exit {rest}, AWS group exit {code}; {total:.0f} s in all", flush=True)
    return rest or code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
