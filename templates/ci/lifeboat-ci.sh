#!/bin/sh
# Lifeboat dry run against LocalStack for any CI system: the steps of templates/ci/github-actions.yml.
# Needs: lifeboat and terraform on PATH, LocalStack answering at AWS_ENDPOINT_URL, the stack file in the
# current folder, TARGET naming its aws target (see the workflow file for reach: hosts and RDS).
# Exit status: the first failing step's; the stack is destroyed whatever happened after `up` began.
set -eu
: "${AWS_ENDPOINT_URL:=http://localhost:4566}" "${AWS_ACCESS_KEY_ID:=test}" "${AWS_SECRET_ACCESS_KEY:=test}"
: "${AWS_REGION:=us-east-1}" "${TARGET:=ci}"
export AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION TF_IN_AUTOMATION=1

lifeboat validate --output json > validate.json
code=0; lifeboat plan --on "$TARGET" --detailed-exitcode --output json > plan.json || code=$?
[ "$code" -eq 0 ] || [ "$code" -eq 10 ] || exit "$code"

destroy() { lifeboat destroy --on "$TARGET" --yes --output json > destroy.json; }
trap 'status=$?; destroy || status=$?; exit $status' EXIT
lifeboat up --on "$TARGET" --yes --output json > up.json
lifeboat plan --on "$TARGET" --detailed-exitcode --output json > plan-again.json
