#!/usr/bin/env bash
# Lint everything: migration versions the runtime and a service would
# share, rustfmt, clippy (warnings are errors), buf lint on proto/,
# the scripts through shellcheck when it is installed (apt-get install shellcheck),
# and the Kubernetes manifests under k8s/ when kubernetes-validate is installed
# (pip install kubernetes-validate; it validates offline). Runs every check,
# reports each, and exits non-zero if any failed.
#
#   scripts/lint.sh           all checks
#   LINT_SKIP=clippy,k8s scripts/lint.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

failed=()
skip=",${LINT_SKIP:-},"

step() {
  local name=$1
  shift
  if [[ $skip == *",$name,"* ]]; then
    echo "lint: $name skipped (LINT_SKIP)" >&2
    return 0
  fi
  echo "lint: $name" >&2
  if "$@"; then
    echo "lint: $name ok" >&2
  else
    echo "lint: $name FAILED" >&2
    failed+=("$name")
  fi
}

buf_lint() {
  if [[ ! -x node_modules/.bin/buf ]]; then
    echo "lint: buf is not installed: run 'npm ci' at the repository root" >&2
    return 1
  fi
  (cd proto && npx --no-install buf lint)
}

k8s_validate() {
  if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "lint: kubernetes-validate not found (pip install kubernetes-validate); skipping" >&2
    return 0
  fi
  local files=() rc=0 overlay rendered
  mapfile -t files < <(find k8s -name '*.yaml' ! -name 'kustomization.yaml' | sort)
  if [[ ${#files[@]} -gt 0 ]]; then
    kubernetes-validate --strict --quiet "${files[@]}" || rc=1
  fi
  # The rendered overlays too, when kubectl (with its built-in kustomize) is here.
  if command -v kubectl >/dev/null 2>&1; then
    rendered=$(mktemp --suffix=.yaml)
    for overlay in k8s/base k8s/overlays/*; do
      [[ -f $overlay/kustomization.yaml ]] || continue
      if kubectl kustomize "$overlay" >"$rendered"; then
        kubernetes-validate --strict --quiet "$rendered" || { echo "lint: in $overlay" >&2; rc=1; }
      else
        echo "lint: kustomize build of $overlay failed" >&2
        rc=1
      fi
    done
    rm -f "$rendered"
  fi
  return "$rc"
}

shell_check() {
  if ! command -v shellcheck >/dev/null 2>&1; then
    echo "lint: shellcheck not found (apt-get install shellcheck); skipping" >&2
    return 0
  fi
  shellcheck -x scripts/*.sh .ci/run
}

# The runtime's migrations and a service's share the service's migration
# table: one version in both would refuse to start the service.
migration_versions() {
  local dir rc=0 clash
  for dir in services/*/migrations; do
    clash=$(comm -12 <(find shared/runtime/migrations -name '*.sql' -printf '%f\n' | cut -d_ -f1 | sort) \
      <(find "$dir" -name '*.sql' -printf '%f\n' | cut -d_ -f1 | sort))
    if [[ -n $clash ]]; then
      echo "lint: $dir and shared/runtime/migrations share version(s): $clash" >&2
      rc=1
    fi
  done
  return "$rc"
}

step migrations migration_versions
step rustfmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step buf buf_lint
step shellcheck shell_check
step k8s k8s_validate

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "lint: failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all checks passed" >&2
