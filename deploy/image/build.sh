#!/usr/bin/env bash
# Builds the runbook image with buildah, offline:
#   deploy/image/build.sh [BINARY] [IMAGE]
# BINARY defaults to target/release/runbook (build it first: cargo build --release --locked),
# IMAGE to localhost/runbook:VERSION. Extra buildah options go in BUILDAH_OPTIONS (the tests
# use a temporary --root and --runroot and the vfs driver).
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=${1:-target/release/runbook}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image=${2:-localhost/runbook:$version}
[ -x "$binary" ] || { echo "error: $binary is not an executable; cargo build --release --locked" >&2; exit 2; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
cp "$binary" "$root/usr/local/bin/runbook"
if command -v strip >/dev/null 2>&1; then
  strip "$root/usr/local/bin/runbook"
fi
# The dynamic loader and every library the binary links, at the paths it looks for them.
for library in $(ldd "$binary" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done
# For HTTPS notifications and facts (the API server's CA comes from the service account).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
cp deploy/image/Containerfile "$context/"
# shellcheck disable=SC2086 # BUILDAH_OPTIONS is a list of options.
buildah ${BUILDAH_OPTIONS:-} bud --isolation chroot --tag "$image" --file "$context/Containerfile" "$context"
echo "built $image"
