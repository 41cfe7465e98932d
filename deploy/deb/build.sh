#!/usr/bin/env bash
# Builds the labmesh Debian package from a built binary with plain dpkg-deb (no debhelper, no
# cargo-deb). `deploy/deb/build.sh --help` says how.
set -euo pipefail
umask 022

usage() {
  cat <<'EOF'
NAME
    build.sh - build labmesh_VERSION_ARCH.deb from a labmesh binary

SYNOPSIS
    deploy/deb/build.sh [--binary PATH] [--out DIR] [--revision N] [--arch ARCH]
                        [--compress xz|gzip|zstd|none]

DESCRIPTION
    Stages the package and builds it with `dpkg-deb --root-owner-group --build`:

      /usr/bin/labmesh                      the binary, stripped
      /lib/systemd/system/labmesh.service   deploy/systemd/labmesh.service
      /etc/labmesh/labmesh.toml             deploy/labmesh.example.toml (a conffile: an
                                            upgrade never overwrites your changes)
      /usr/share/man/man1/labmesh.1.gz      deploy/deb/labmesh.1
      /usr/share/doc/labmesh/copyright      deploy/deb/copyright
      /usr/share/doc/labmesh/changelog.Debian.gz
      /usr/share/lintian/overrides/labmesh  deploy/deb/lintian-overrides

    with the maintainer scripts deploy/deb/postinst (creates the labmesh system user and
    group, gives the config to that group, enables and starts the service where systemd
    runs), prerm (stops it on removal) and postrm (on purge: removes /var/lib/labmesh and the
    user). Depends comes from dpkg-shlibdeps (package dpkg-dev) when it is installed, else
    from the binary's NEEDED libraries and glibc symbol versions.

    The version is the workspace version of Cargo.toml with a Debian revision
    (0.1.0 -> 0.1.0-1). File dates are SOURCE_DATE_EPOCH, else the last commit's date, so
    the same inputs give the same package.

OPTIONS
    --binary PATH   the labmesh binary (default: target/release/labmesh, built with
                    `cargo build --release -p labmesh` when missing).
    --out DIR       where the .deb goes (default: target/deb). It prints the path.
    --revision N    the Debian revision (default: 1).
    --arch ARCH     the Debian architecture (default: from the binary's ELF header,
                    else `dpkg --print-architecture`).
    --compress TYPE the compression of the package's data (default: xz, what the Debian
                    archive uses; gzip is much faster, for tests).
    -h, --help      this text.

ENVIRONMENT
    DEBFULLNAME, DEBEMAIL   the Maintainer field (default: labmesh maintainers
                            <labmesh@example.invalid>).
    SOURCE_DATE_EPOCH       the date of every file and of the changelog entry.

EXAMPLES
    cargo build --release -p labmesh && deploy/deb/build.sh
    sudo apt-get install ./target/deb/labmesh_0.1.0-1_amd64.deb
    lintian target/deb/labmesh_0.1.0-1_amd64.deb
EOF
}

die() {
  printf 'build.sh: error: %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf 'build.sh: %s\nSee: deploy/deb/build.sh --help\n' "$*" >&2
  exit 2
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BINARY=""
OUT=$REPO/target/deb
REVISION=1
ARCH=""
COMPRESS=xz

while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --binary | --out | --revision | --arch | --compress)
      [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"
      case $1 in
        --binary) BINARY=$2 ;;
        --out) OUT=$2 ;;
        --revision) REVISION=$2 ;;
        --arch) ARCH=$2 ;;
        --compress) COMPRESS=$2 ;;
      esac
      shift
      ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  shift
done

for tool in dpkg-deb strip gzip md5sum; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is missing: apt-get install dpkg binutils gzip coreutils"
done
case $COMPRESS in
  xz | gzip | zstd | none) ;;
  *) usage_error "--compress $COMPRESS: xz, gzip, zstd or none" ;;
esac
[[ $REVISION =~ ^[0-9A-Za-z.+~]+$ ]] || usage_error "--revision $REVISION: letters, digits and . + ~ only"

if [[ -z $BINARY ]]; then
  BINARY=$REPO/target/release/labmesh
  if [[ ! -x $BINARY ]]; then
    command -v cargo >/dev/null 2>&1 ||
      die "$BINARY is missing and cargo is not installed: build it (cargo build --release -p labmesh) or pass --binary PATH"
    (cd "$REPO" && cargo build --release --locked -p labmesh)
  fi
fi
[[ -f $BINARY && -x $BINARY ]] || die "--binary $BINARY: no executable file there"

# The workspace version: node/Cargo.toml's own `version = "..."`, or [workspace.package]'s
# when it says `version.workspace = true`.
toml_version() { # FILE SECTION
  awk -v want="$2" '
    /^[ \t]*\[/ { sec = $0; gsub(/^[ \t]*\[+[ \t]*|[ \t]*\]+.*$/, "", sec); next }
    sec == want && /^[ \t]*version[ \t]*=[ \t]*"/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); print v; exit }
  ' "$1"
}
UPSTREAM=$(toml_version "$REPO/node/Cargo.toml" package)
[[ -n $UPSTREAM ]] || UPSTREAM=$(toml_version "$REPO/Cargo.toml" workspace.package)
[[ -n $UPSTREAM ]] || die "no version in node/Cargo.toml nor in [workspace.package] of Cargo.toml"
# Cargo's pre-releases (1.0.0-rc.1) sort before the release in Debian with ~ (1.0.0~rc.1).
VERSION=${UPSTREAM/-/\~}-$REVISION

if [[ -z $ARCH ]]; then
  machine=""
  if command -v readelf >/dev/null 2>&1; then
    machine=$(LC_ALL=C readelf -h "$BINARY" 2>/dev/null | sed -n 's/^ *Machine: *//p')
  fi
  case $machine in
    *X86-64*) ARCH=amd64 ;;
    *AArch64*) ARCH=arm64 ;;
    *ARM) ARCH=armhf ;;
    *80386*) ARCH=i386 ;;
    *RISC-V*) ARCH=riscv64 ;;
    "") ARCH=$(dpkg --print-architecture) ;;
    *) die "$BINARY is for $machine, which build.sh does not map to a Debian architecture: pass --arch ARCH" ;;
  esac
fi

MAINTAINER="${DEBFULLNAME:-labmesh maintainers} <${DEBEMAIL:-labmesh@example.invalid}>"
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
HOMEPAGE=$(awk '/^[ \t]*repository[ \t]*=[ \t]*"/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); print v; exit }' "$REPO/Cargo.toml")

for f in "$REPO/deploy/systemd/labmesh.service" "$REPO/deploy/labmesh.example.toml" \
  "$HERE/copyright" "$HERE/labmesh.1" "$HERE/lintian-overrides" \
  "$HERE/postinst" "$HERE/prerm" "$HERE/postrm"; do
  [[ -f $f ]] || die "$f is missing: build.sh runs from a labmesh checkout"
done

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/labmesh-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/labmesh
install -d -m 0755 "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/labmesh" \
  "$PKG/usr/share/doc/labmesh" "$PKG/usr/share/man/man1" "$PKG/usr/share/lintian/overrides"

# What dh_strip does: no debug symbols, no .comment/.note sections.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  -o "$PKG/usr/bin/labmesh" "$BINARY"
chmod 0755 "$PKG/usr/bin/labmesh"
install -m 0644 "$REPO/deploy/systemd/labmesh.service" "$PKG/lib/systemd/system/labmesh.service"
install -m 0644 "$REPO/deploy/labmesh.example.toml" "$PKG/etc/labmesh/labmesh.toml"
install -m 0644 "$HERE/copyright" "$PKG/usr/share/doc/labmesh/copyright"
install -m 0644 "$HERE/lintian-overrides" "$PKG/usr/share/lintian/overrides/labmesh"
gzip -9nc "$HERE/labmesh.1" >"$PKG/usr/share/man/man1/labmesh.1.gz"
{
  printf 'labmesh (%s) unstable; urgency=medium\n\n' "$VERSION"
  printf '  * Built from the labmesh source tree by deploy/deb/build.sh.\n\n'
  printf ' -- %s  %s\n' "$MAINTAINER" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH" 2>/dev/null || LC_ALL=C date -u -r "$SOURCE_DATE_EPOCH" '+%a, %d %b %Y %H:%M:%S +0000')"
} | gzip -9nc >"$PKG/usr/share/doc/labmesh/changelog.Debian.gz"
chmod 0644 "$PKG/usr/share/man/man1/labmesh.1.gz" "$PKG/usr/share/doc/labmesh/changelog.Debian.gz"

for script in postinst prerm postrm; do
  install -m 0755 "$HERE/$script" "$PKG/DEBIAN/$script"
done
echo /etc/labmesh/labmesh.toml >"$PKG/DEBIAN/conffiles"

# Depends: what the binary links, and adduser for the maintainer scripts.
shlib_depends() {
  local out
  if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$STAGE/debian"
    printf 'Source: labmesh\n\nPackage: labmesh\nArchitecture: any\n' >"$STAGE/debian/control"
    if out=$(cd "$STAGE" && dpkg-shlibdeps -O -elabmesh/usr/bin/labmesh 2>/dev/null); then
      rm -rf "$STAGE/debian"
      out=${out#shlibs:Depends=}
      [[ -n $out ]] && {
        echo "$out"
        return
      }
    fi
    rm -rf "$STAGE/debian"
  fi
  # Without dpkg-shlibdeps (or for another architecture's binary): the NEEDED libraries,
  # mapped to their packages, and the newest glibc symbol version the binary uses.
  local lib pkgs=() glibc p
  command -v readelf >/dev/null 2>&1 || die "neither dpkg-shlibdeps (dpkg-dev) nor readelf (binutils) is installed: one of them finds Depends"
  glibc=$(LC_ALL=C readelf -V --wide "$PKG/usr/bin/labmesh" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)
  for lib in $(LC_ALL=C readelf -d "$PKG/usr/bin/labmesh" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $lib in
      libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) p="libc6${glibc:+ (>= $glibc)}" ;;
      libgcc_s.so.1) p="libgcc-s1" ;;
      *) die "the binary links $lib, which build.sh cannot map to a package without dpkg-shlibdeps: apt-get install dpkg-dev" ;;
    esac
    case " ${pkgs[*]-} " in
      *" $p "*) ;;
      *) pkgs+=("$p") ;;
    esac
  done
  local IFS=,
  echo "${pkgs[*]-}" | sed 's/,/, /g'
}
DEPENDS=$(shlib_depends)
DEPENDS=${DEPENDS:+$DEPENDS, }adduser

(cd "$PKG" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/md5sums" "$PKG/DEBIAN/conffiles"
INSTALLED_SIZE=$(du -sk --apparent-size --exclude=DEBIAN "$PKG" | cut -f1)

{
  echo "Package: labmesh"
  echo "Version: $VERSION"
  echo "Architecture: $ARCH"
  echo "Maintainer: $MAINTAINER"
  echo "Installed-Size: $INSTALLED_SIZE"
  echo "Depends: $DEPENDS"
  echo "Section: admin"
  echo "Priority: optional"
  [[ -n $HOMEPAGE ]] && echo "Homepage: $HOMEPAGE"
  cat <<'EOF'
Description: peer-to-peer observability agent for homelabs
 labmesh runs on every host of a homelab and keeps an event log (builds,
 deployments, health checks, host samples) that every peer replicates over a
 QUIC mesh with mutual TLS: there is no central server to keep running.
 .
 Each agent samples its host (CPU with steal, memory, swap, disks, network,
 NVIDIA GPUs, Docker containers), runs health checks, serves a local HTTP API
 and a status page, and one elected node sends alerts (webhook, Slack,
 Discord, Telegram, ntfy, Alertmanager, email) and a weekly digest.
 .
 The package installs the agent as the systemd service labmesh.service,
 running as the unprivileged labmesh user with its data in /var/lib/labmesh
 and its configuration in /etc/labmesh/labmesh.toml.
EOF
} >"$PKG/DEBIAN/control"

find "$PKG" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
DEB=$(cd "$OUT" && pwd)/labmesh_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group "-Z$COMPRESS" --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
