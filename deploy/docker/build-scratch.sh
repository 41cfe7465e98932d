#!/usr/bin/env bash
# Builds a FROM-scratch labmesh image around an already built binary, with no base image and no
# registry: the binary, exactly the shared libraries `ldd` lists (at the paths it lists them) and
# the dynamic loader, an /etc/passwd and /etc/group naming the non-root user `nonroot` (65532,
# as in distroless), the CA certificates of the build host when it has them (HTTPS receivers),
# and an empty data dir owned by that user. The Dockerfile is Dockerfile.scratch next to this
# script.
#
#   deploy/docker/build-scratch.sh target/release/labmesh labmesh:local
#
# The image holds this machine's glibc: run it on the machine (or distribution) that built the
# binary. For an image to ship, build deploy/docker/Dockerfile instead.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 BINARY TAG" >&2
    exit 2
fi
binary=$1
tag=$2
uid=65532
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[[ -x $binary ]] || { echo "$0: $binary is not an executable file" >&2; exit 2; }
command -v ldd >/dev/null || { echo "$0: ldd is needed to find the binary's libraries" >&2; exit 2; }
command -v docker >/dev/null || { echo "$0: docker is not installed" >&2; exit 2; }

ctx=$(mktemp -d "${TMPDIR:-/tmp}/labmesh-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs

# Copies $1 (following links: the loader is a link on most distributions) to $root$2.
put() {
    mkdir -p "$root$(dirname "$2")"
    cp -L "$1" "$root$2"
}

put "$binary" /usr/local/bin/labmesh

# ldd lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, the loader as
# `/lib64/ld-linux-x86-64.so.2 (0x...)`, and the kernel's vDSO with no file (skipped). A
# static binary has none: "not a dynamic executable" (ldd exits 1).
libs=$(ldd "$binary" 2>&1 || true)
if grep -q 'not found' <<<"$libs"; then
    echo "$0: ldd cannot find some of the binary's libraries:" >&2
    echo "$libs" >&2
    exit 1
fi
while read -r lib; do
    put "$lib" "$lib"
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs" | sort -u)

mkdir -p "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$uid" "$uid" >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:%d:\n' "$uid" >"$root/etc/group"
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    put /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
fi

# The data dir and the home dir, 0700 and the user's. Dockerfile.scratch copies them with
# --chown (COPY alone makes everything root's) into /var/lib and /home, which rootfs/ already
# made root's; as the contents of a copied folder they keep their 0700 (the agent keeps the mode
# of a data dir that exists).
mkdir -p "$root/var/lib" "$root/home" "$ctx/owned/var-lib/labmesh" "$ctx/owned/home/nonroot"
chmod 0700 "$ctx/owned/var-lib/labmesh" "$ctx/owned/home/nonroot"

cp "$here/Dockerfile.scratch" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx"
