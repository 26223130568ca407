#!/usr/bin/env bash
# Build the local Python base image once, for machines that cannot pull from an
# image registry (this one, CI): a minimal Debian with python3, pip, venv and
# ca-certificates made by debootstrap, then `docker import`ed. The images'
# Dockerfiles take it as their PYTHON_IMAGE build argument.
#
#   scripts/base-image.sh          print the base image's name (build it first if missing)
#
# The name carries a hash of the recipe below (suite, packages, this script), so
# the image is rebuilt only when the recipe changes; an engine whose data root
# is kept (scripts/docker-engine.sh) keeps it between runs. Uses docker as
# configured (DOCKER_HOST); installs debootstrap with apt-get when missing.
#
#   KTC_BASE_SUITE    Debian release (default bookworm: python 3.11, as python:3.11-slim-bookworm)
#   KTC_BASE_MIRROR   Debian mirror (default: the first one in /etc/apt/sources.list*,
#                     else http://deb.debian.org/debian)
#   KTC_BASE_TIMEOUT  seconds debootstrap may take (default 900)
#   KTC_BASE_HOST_CAS the host's CA bundle whose extra certificates (those
#                     Debian's bundle lacks: a TLS-inspecting proxy's, as on
#                     many CI runners) the base trusts too, so pip can reach
#                     the index from a build; "" = none
#                     (default /etc/ssl/certs/ca-certificates.crt)
set -euo pipefail

SUITE="${KTC_BASE_SUITE:-bookworm}"
PACKAGES="python3,python3-pip,python3-venv,ca-certificates"
TIMEOUT="${KTC_BASE_TIMEOUT:-900}"
HOST_CAS="${KTC_BASE_HOST_CAS-/etc/ssl/certs/ca-certificates.crt}"
REPOSITORY="keras-tuner-cluster/python-base"

say() { echo "base-image: $*" >&2; }
die() {
  say "$*"
  exit 1
}

[[ $# -eq 0 ]] || {
  echo "usage: $0   (prints the base image's name, building it first if needed)" >&2
  exit 2
}

# The Debian archive this machine's apt uses: deb822 `URIs:` (debian.sources)
# or one-line `deb URL SUITE ...`, leaving out the security archive.
host_mirror() {
  local file line
  for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$file" ]] || continue
    while read -r line; do
      case "$line" in
        URIs:*) line="${line#URIs:}" ;;
        deb\ *) line="$(awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; exit }}' <<<"$line")" ;;
        *) continue ;;
      esac
      for line in $line; do
        if [[ "$line" == http*://*/debian && "$line" != *security* ]]; then
          echo "$line"
          return 0
        fi
      done
    done <"$file"
  done
  echo "http://deb.debian.org/debian"
}

MIRROR="${KTC_BASE_MIRROR:-$(host_mirror)}"
if [[ -n "$HOST_CAS" && ! -r "$HOST_CAS" ]]; then HOST_CAS=""; fi
# The mirror is left out of the hash: any mirror gives the same packages.
RECIPE_HASH="$( (echo "$SUITE $PACKAGES" && cat "$0" ${HOST_CAS:+"$HOST_CAS"}) | sha256sum | cut -c1-12)"
IMAGE="$REPOSITORY:$SUITE-$RECIPE_HASH"

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
  die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start one: scripts/docker-engine.sh start"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE is there (recipe unchanged)"
  echo "$IMAGE"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  [[ "$(id -u)" -eq 0 ]] || die "debootstrap not installed, and installing it needs root: sudo apt-get install debootstrap"
  say "installing debootstrap (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root (chroot, device nodes)"

root="$(mktemp -d "${TMPDIR:-/tmp}/ktc-base.XXXXXX")"
cleanup() { rm -rf --one-file-system "$root"; }
trap cleanup EXIT

started=$SECONDS
say "debootstrap $SUITE from $MIRROR with $PACKAGES (a minute or two)"
if ! timeout "$TIMEOUT" debootstrap --variant=minbase --include="$PACKAGES" \
  "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1; then
  tail -n 5 "$root.log" >&2
  die "debootstrap failed (full log: $root.log)"
fi
rm -f "$root.log"
if [[ -n "$HOST_CAS" ]]; then
  added="$(python3 - "$HOST_CAS" "$root" <<'PY'
"""Write each certificate of the host bundle that the new root's bundle lacks
to <root>/usr/local/share/ca-certificates/, where update-ca-certificates finds it."""
import pathlib
import re
import sys

pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
host, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
known = set(pem.findall((root / "etc/ssl/certs/ca-certificates.crt").read_text()))
extra = [cert for cert in dict.fromkeys(pem.findall(host.read_text())) if cert not in known]
for number, cert in enumerate(extra):
    (root / f"usr/local/share/ca-certificates/host-{number}.crt").write_text(cert + "\n")
print(len(extra))
PY
)"
  if [[ "$added" != 0 ]]; then
    # (Its "rehash: warning" about the bundle file itself is expected.)
    chroot "$root" update-ca-certificates >/dev/null 2>&1
    say "the base also trusts $added CA certificate(s) of $HOST_CAS"
  fi
fi
# What a slim image leaves out: apt's lists and caches, docs, man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
    - "$IMAGE" >/dev/null
say "built $IMAGE in $((SECONDS - started)) s"
# Bases of older recipes: untag them (images built on them keep their layers).
docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPOSITORY" | grep -vxF "$IMAGE" |
  xargs --no-run-if-empty docker image rm >/dev/null 2>&1 || true
echo "$IMAGE"
