#!/usr/bin/env bash
# Checks every manifest here against the Kubernetes API schemas with
# kubernetes-validate (from PyPI, installed into a private virtual
# environment on first use). Unknown fields are errors (--strict).
#
#   deploy/k8s/validate.sh [--kubernetes-version 1.33]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=1.33
if [ "${1:-}" = "--kubernetes-version" ]; then version=$2; fi
venv=${MINIMA_VALIDATOR_VENV:-$here/../../target/k8s-validate}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" "$here"/*.yaml
