#!/usr/bin/env bash
# Installs, joins, upgrades or removes the labmesh agent as a service (systemd on Linux,
# launchd on macOS). `deploy/install.sh --help` is the manual.
set -euo pipefail
umask 022

usage() {
  cat <<'EOF'
NAME
    install.sh - install the labmesh agent as a service, join a mesh, upgrade, remove

SYNOPSIS
    deploy/install.sh [--binary PATH] [--user] [--root DIR] [--dry-run]
    deploy/install.sh --join BUNDLE --seed HOST:PORT [--seed HOST:PORT]... [OPTIONS]
    deploy/install.sh --seed HOST:PORT [--seed HOST:PORT]... [OPTIONS]
    deploy/install.sh --upgrade [--binary PATH] [OPTIONS]
    deploy/install.sh --uninstall [--purge] [OPTIONS]

DESCRIPTION
    Without a mode, installs labmesh on this host, or puts an existing installation back
    into the state below: running it again changes nothing and is not an error.

    1. The binary: --binary PATH, else target/release/labmesh of this checkout when it
       exists, else `cargo build --release -p labmesh` (as $SUDO_USER under sudo).
    2. On Linux, the `labmesh` system user and group (no login shell, no home directory
       created; its home is the data dir). It joins the `docker` group when that group
       exists, so that docker checks and the container probe reach /var/run/docker.sock.
    3. The files below. An existing config is never overwritten: it is yours once written.

         Linux (systemd)                        mode  owner
         /usr/bin/labmesh                       0755  root:root
         /etc/systemd/system/labmesh.service    0644  root:root     deploy/systemd/
         /etc/labmesh/                          0755  root:root
         /etc/labmesh/labmesh.toml              0640  root:labmesh  deploy/labmesh.example.toml
         /var/lib/labmesh/                      0750  labmesh:labmesh  events, certs, token

         macOS (launchd; the daemon runs as root, as its plist says)
         /usr/local/bin/labmesh                 0755  root:wheel
         /Library/LaunchDaemons/com.labmesh.agent.plist   0644  root:wheel  deploy/launchd/
         /usr/local/etc/labmesh/labmesh.toml    0640  root:wheel
         /usr/local/var/labmesh/                0750  root:wheel
         /usr/local/var/log/labmesh/            0750  root:wheel    agent.log

         macOS with --user (a LaunchAgent of the user running install.sh, no root)
         /usr/local/bin/labmesh                 0755  (a writable /usr/local/bin, or put
                                                      it there once with sudo)
         ~/Library/LaunchAgents/com.labmesh.agent.user.plist
         ~/.config/labmesh/labmesh.toml         0600
         ~/Library/Application Support/labmesh/ 0750
         ~/Library/Logs/labmesh/                0750  agent.log

    4. The service, enabled at boot and started: `systemctl daemon-reload` and
       `systemctl enable --now labmesh` (restarted when the binary, the unit or the user's
       groups changed); on macOS `launchctl bootstrap system PLIST` (gui/UID with --user).

    A node started this way creates a new mesh and holds its CA: it is the first node, the
    CA node, of a new mesh. A host that should join an existing mesh is installed with
    --join from the start instead (see JOINING).

MODES
    --join BUNDLE
        Install as above (without starting the agent first), import BUNDLE into the data
        dir with `labmesh certs import` (the files end up owned by the agent's user), write
        the --seed addresses into the config, and restart the agent. BUNDLE is the file
        that `labmesh certs issue THISHOST --out FILE` wrote on the CA node; it holds this
        node's private key: delete it once imported. Needs at least one --seed.

    --seed HOST:PORT
        A peer to contact first (the mesh port is UDP 7370). Sets `seeds = [...]` in the
        [mesh] section of the config to exactly the --seed addresses given (repeatable;
        replaced, not added to, on every run), then restarts the agent. Without --join it
        does what a plain run does, plus the seeds.

    --upgrade
        Replace the binary (--binary PATH, or as in step 1) and restart the agent when it
        runs. Touches nothing else: not the unit, the config, the user or the data.

    --uninstall
        Stop and disable the service; remove the unit (or plist), the binary, the config
        directory (with your config in it) and, on Linux, the labmesh user and group. Keeps
        the data dir: the node's certificates and events survive a reinstall.

    --purge
        With --uninstall: remove the data dir (and on macOS the log folder) too. The
        node's identity and its events are gone for good (peers keep their copies of the
        events).

OPTIONS
    --binary PATH   the labmesh binary to install (built for this host).
    --user          macOS: install the per-user LaunchAgent instead of the system daemon
                    (run without sudo).
    --root DIR      install into DIR instead of /: every path above is prefixed with DIR,
                    the user and group are created in DIR/etc/passwd and DIR/etc/group
                    (seeded with a root entry when missing), and systemctl is not called:
                    what would run is printed. For packaging, tests and inspection; Linux
                    only.
    --dry-run       print what would change; change nothing.
    -h, --help      this manual.

JOINING
    On the CA node (the first node of the mesh):
        sudo labmesh certs issue THISHOST --out THISHOST.bundle.json
    (on a macOS CA node: sudo LABMESH_DATA_DIR=/usr/local/var/labmesh labmesh certs ...)
    Copy the file to THISHOST over a trusted channel, then on THISHOST:
        sudo deploy/install.sh --join THISHOST.bundle.json --seed CA_HOST:7370
    THISHOST is the name the node has in the mesh (usually its host name).

    A host that already started alone holds the CA of its own mesh and cannot join
    another one: --join says so and how to set that identity aside.

FILES
    Every config key is documented in deploy/labmesh.example.toml. The service sets
    LABMESH_CONFIG and LABMESH_DATA_DIR for the agent; on Linux the CLI run as root uses
    the same paths by default (`sudo labmesh status`).

EXIT STATUS
    0 done (or nothing to do); 1 failed (the message names the file and the fix);
    2 usage error.

EXAMPLES
    sudo deploy/install.sh
    sudo deploy/install.sh --join ws1.bundle.json --seed nas.lan:7370
    cargo build --release -p labmesh && sudo deploy/install.sh --upgrade
    sudo deploy/install.sh --uninstall --purge
    deploy/install.sh --root /tmp/lm --binary target/debug/labmesh --dry-run
EOF
}

# ---- output and errors -------------------------------------------------------------------

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf 'install.sh: %s\nSee: deploy/install.sh --help\n' "$*" >&2
  exit 2
}

# Prints a command as it would be typed: `would run: systemctl enable --now labmesh`.
show() {
  local out="" a q="'"
  for a in "$@"; do
    case $a in
      *[!A-Za-z0-9_./:=@%+,-]* | '') out+=" '${a//$q/$q\\$q$q}'" ;;
      *) out+=" $a" ;;
    esac
  done
  printf 'would run:%s\n' "$out"
}

# Runs a command that changes the host; under --dry-run only prints it.
act() {
  if ((DRY_RUN)); then
    show "$@"
    return 0
  fi
  "$@"
}

# Runs a service-manager command (systemctl, launchctl); under --root, under --dry-run and
# where the service manager does not run, only prints it.
svc() {
  if ((DRY_RUN)) || [[ -n $ROOT ]] || ((!SERVICE_MANAGER_UP)); then
    show "$@"
    return 0
  fi
  "$@"
}

# ---- arguments ---------------------------------------------------------------------------

ORIG_ARGS=("$@")
MODE=install
SCOPE=system
BINARY=""
ROOT=""
JOIN=""
SEEDS=()
PURGE=0
DRY_RUN=0

need_value() {
  [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"
}

while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --binary)
      need_value "$@"
      BINARY=$2
      shift
      ;;
    --binary=*) BINARY=${1#*=} ;;
    --root)
      need_value "$@"
      ROOT=$2
      shift
      ;;
    --root=*) ROOT=${1#*=} ;;
    --join)
      need_value "$@"
      JOIN=$2
      shift
      ;;
    --join=*) JOIN=${1#*=} ;;
    --seed)
      need_value "$@"
      SEEDS+=("$2")
      shift
      ;;
    --seed=*) SEEDS+=("${1#*=}") ;;
    --upgrade) MODE=upgrade ;;
    --uninstall) MODE=uninstall ;;
    --purge) PURGE=1 ;;
    --user) SCOPE=user ;;
    --dry-run) DRY_RUN=1 ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  shift
done

if ((PURGE)) && [[ $MODE != uninstall ]]; then
  usage_error "--purge goes with --uninstall (deploy/install.sh --uninstall --purge)"
fi
if [[ $MODE != install ]] && { [[ -n $JOIN ]] || ((${#SEEDS[@]})); }; then
  usage_error "--join and --seed do not go with --$MODE"
fi
if [[ -n $JOIN ]] && ((${#SEEDS[@]} == 0)); then
  usage_error "--join needs at least one --seed HOST:PORT: a peer already in the mesh, such as the CA node (--seed nas.lan:7370)"
fi
if [[ -n $BINARY && $MODE == uninstall ]]; then
  usage_error "--binary does not go with --uninstall"
fi
seed_re='^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
for seed in ${SEEDS[@]+"${SEEDS[@]}"}; do
  if ! [[ $seed =~ $seed_re ]]; then
    usage_error "--seed $seed: give HOST:PORT, a host name or IP address and the mesh's UDP port (nas.lan:7370, 192.168.1.10:7370, [fd00::1]:7370)"
  fi
done
if [[ -n $ROOT ]]; then
  [[ $ROOT == /* ]] || ROOT=$PWD/$ROOT
  ROOT=${ROOT%/}
  [[ -n $ROOT ]] || usage_error "--root /: leave --root out to install into /"
fi
if [[ -n $JOIN ]]; then
  [[ -f $JOIN && -r $JOIN ]] ||
    die "--join $JOIN: no readable file there. Copy the bundle that \`labmesh certs issue $(uname -n | cut -d. -f1) --out FILE\` wrote on the CA node to this host, and pass its path"
  [[ $JOIN == /* ]] || JOIN=$PWD/$JOIN
fi

# ---- platform and paths ------------------------------------------------------------------

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
R=$ROOT # the prefix of every path written
LOG_DIR=""
CREATE_ACCOUNT=0

case $(uname -s) in
  Linux)
    OS=linux
    [[ $SCOPE == system ]] || usage_error "--user is for macOS (its per-user LaunchAgent); on Linux labmesh runs as the system service"
    BIN_PATH=/usr/bin/labmesh
    SERVICE_FILE=/etc/systemd/system/labmesh.service
    SERVICE_SRC=$REPO/deploy/systemd/labmesh.service
    CONF_DIR=/etc/labmesh
    CONF_MODE=0640
    DATA_DIR=/var/lib/labmesh
    ACCOUNT=labmesh
    CREATE_ACCOUNT=1
    SERVICE_MANAGER_UP=0
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
      SERVICE_MANAGER_UP=1
    fi
    ;;
  Darwin)
    OS=macos
    [[ -z $ROOT ]] || usage_error "--root is for the Linux layout only"
    BIN_PATH=/usr/local/bin/labmesh
    SERVICE_MANAGER_UP=1
    if [[ $SCOPE == system ]]; then
      SERVICE_FILE=/Library/LaunchDaemons/com.labmesh.agent.plist
      SERVICE_SRC=$REPO/deploy/launchd/com.labmesh.agent.plist
      LABEL=com.labmesh.agent
      DOMAIN=system
      CONF_DIR=/usr/local/etc/labmesh
      CONF_MODE=0640
      DATA_DIR=/usr/local/var/labmesh
      LOG_DIR=/usr/local/var/log/labmesh
      ACCOUNT=root # the plist sets no UserName: launchd runs the daemon as root
    else
      [[ $HOME == /* && $HOME != *[\&\<\>\|\\]* ]] ||
        die "HOME=$HOME: the LaunchAgent needs an absolute home folder without & < > | \\ in it"
      SERVICE_FILE=$HOME/Library/LaunchAgents/com.labmesh.agent.user.plist
      SERVICE_SRC=$REPO/deploy/launchd/com.labmesh.agent.user.plist
      LABEL=com.labmesh.agent.user
      DOMAIN=gui/$(id -u)
      CONF_DIR=$HOME/.config/labmesh
      CONF_MODE=0600
      DATA_DIR="$HOME/Library/Application Support/labmesh"
      LOG_DIR=$HOME/Library/Logs/labmesh
      ACCOUNT=$(id -un)
    fi
    ;;
  *) die "$(uname -s) is not supported: install.sh knows Linux (systemd) and macOS (launchd). Run \`labmesh agent\` under your own service manager (see \`labmesh agent --help\`)" ;;
esac
CONF=$CONF_DIR/labmesh.toml
EXAMPLE=$REPO/deploy/labmesh.example.toml

if ((!DRY_RUN)); then
  if [[ $SCOPE == system && $(id -u) != 0 ]]; then
    die "run it as root (it creates a system user and writes under ${ROOT:-/}): sudo $0 ${ORIG_ARGS[*]-}"
  fi
  if [[ $SCOPE == user && $(id -u) == 0 ]]; then
    die "--user installs for the user who runs it: run it without sudo"
  fi
fi
if [[ -z $ROOT && $OS == linux && $SERVICE_MANAGER_UP == 0 && $MODE != uninstall ]]; then
  warn "systemd is not running on this host (a container?): the service is installed but not started; the systemctl commands are printed instead"
fi

# ---- file helpers ------------------------------------------------------------------------
#
# The helpers report through variables (WROTE=1: a file changed), not through exit codes:
# bash ignores `set -e` inside a function whose status is tested, and every failed step must
# stop the script.

# "MODE UID GID" of a path (octal mode without leading zeros), GNU or BSD stat.
attrs() {
  if stat -c '%a %u %g' / >/dev/null 2>&1; then
    stat -c '%a %u %g' "$1"
  else
    stat -f '%Lp %u %g' "$1"
  fi
}

# Gives an existing path its mode and owner, when they differ.
fix_attrs() { # PATH MODE UID GID
  local want have
  want="$(printf '%o' "$((8#$2))") $3 $4"
  have=$(attrs "$1")
  if [[ $have != "$want" ]]; then
    act chown "$3:$4" "$1"
    act chmod "$2" "$1"
  fi
}

ensure_dir() { # PATH MODE UID GID
  if [[ ! -d $1 ]]; then
    if [[ -e $1 ]]; then
      die "$1 exists and is not a directory: move it away, then run install.sh again"
    fi
    act mkdir -p "$1"
  fi
  if [[ -d $1 ]]; then
    fix_attrs "$@"
  fi
}

# Copies SRC to DST (atomically, through DST.new) unless DST already has that content, and
# gives DST its mode and owner either way. WROTE=1 when it wrote DST.
put_file() { # SRC DST MODE UID GID
  local src=$1 dst=$2
  WROTE=0
  [[ -d $(dirname "$dst") ]] || act mkdir -p "$(dirname "$dst")"
  if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
    fix_attrs "$dst" "$3" "$4" "$5"
    return 0
  fi
  act cp "$src" "$dst.new"
  act chown "$4:$5" "$dst.new"
  act chmod "$3" "$dst.new"
  act mv -f "$dst.new" "$dst"
  WROTE=1
}

# Gives everything under DIR the owner UID:GID: the agent owns its whole data dir.
own_tree() { # DIR UID GID
  [[ -d $1 ]] || return 0
  if ((DRY_RUN)); then
    [[ -n $(find "$1" \( ! -uid "$2" -o ! -gid "$3" \) -print 2>/dev/null | head -n 1) ]] || return 0
    show find "$1" '(' '!' -uid "$2" -o '!' -gid "$3" ')' -exec chown -h "$2:$3" '{}' +
    return 0
  fi
  find "$1" \( ! -uid "$2" -o ! -gid "$3" \) -exec chown -h "$2:$3" {} +
}

# ---- accounts ----------------------------------------------------------------------------

# The uid of a user, the gid of a group, and group membership: from DIR/etc under --root,
# else from the system's user database. Empty (false) when there is none.
uid_of() {
  if [[ -n $R ]]; then
    awk -F: -v n="$1" '$1 == n { print $3; exit }' "$R/etc/passwd" 2>/dev/null || true
  else
    id -u "$1" 2>/dev/null || true
  fi
}
gid_of() {
  if [[ -n $R ]]; then
    awk -F: -v n="$1" '$1 == n { print $3; exit }' "$R/etc/group" 2>/dev/null || true
  else
    getent group "$1" 2>/dev/null | cut -d: -f3 || true
  fi
}
in_group() { # USER GROUP
  if [[ -n $R ]]; then
    awk -F: -v u="$1" -v g="$2" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 } END { exit !found }' "$R/etc/group" 2>/dev/null
  else
    id -nG "$1" 2>/dev/null | tr ' ' '\n' | grep -qx "$2"
  fi
}

# A fresh root (--root) gets the account files of a minimal system, so that useradd finds
# them and root (uid 0) resolves in it.
seed_root_accounts() {
  [[ -d $R/etc ]] || act mkdir -p "$R/etc"
  if [[ ! -e $R/etc/passwd ]]; then
    act sh -c 'echo "root:x:0:0:root:/root:/bin/sh" > "$1"' _ "$R/etc/passwd"
  fi
  if [[ ! -e $R/etc/group ]]; then
    act sh -c 'echo "root:x:0:" > "$1"' _ "$R/etc/group"
  fi
  if [[ ! -e $R/etc/shadow ]]; then
    act sh -c 'echo "root:*:1::::::" > "$1" && chmod 0640 "$1"' _ "$R/etc/shadow"
  fi
  if [[ ! -e $R/etc/gshadow ]]; then
    act sh -c 'echo "root:*::" > "$1" && chmod 0640 "$1"' _ "$R/etc/gshadow"
  fi
}

nologin_shell() {
  local s
  for s in /usr/sbin/nologin /sbin/nologin /usr/bin/false /bin/false; do
    if [[ -n $R || -x $s ]]; then
      echo "$s"
      return
    fi
  done
}

# Creates the labmesh system user and group (Linux) where they are missing, and sets
# ACCOUNT_UID/ACCOUNT_GID; GROUPS_CHANGED=1 when the user joined a group (a running agent
# must restart to get it).
ensure_account() {
  GROUPS_CHANGED=0
  if ((!CREATE_ACCOUNT)); then
    ACCOUNT_UID=$(id -u "$ACCOUNT")
    ACCOUNT_GID=$(id -g "$ACCOUNT")
    if [[ $SCOPE == user ]]; then
      FILE_UID=$ACCOUNT_UID FILE_GID=$ACCOUNT_GID
    fi
    return 0
  fi
  local prefix=()
  if [[ -n $R ]]; then
    seed_root_accounts
    prefix=(--prefix "$R")
  fi
  command -v useradd >/dev/null 2>&1 ||
    die "useradd is missing: install the \`passwd\` package (apt-get install passwd), then run install.sh again"
  if [[ -z $(gid_of "$ACCOUNT") ]]; then
    say "creating the system group $ACCOUNT"
    act groupadd ${prefix[@]+"${prefix[@]}"} --system "$ACCOUNT"
  fi
  if [[ -z $(uid_of "$ACCOUNT") ]]; then
    say "creating the system user $ACCOUNT"
    act useradd ${prefix[@]+"${prefix[@]}"} --system --gid "$ACCOUNT" --no-create-home \
      --home-dir "$DATA_DIR" --shell "$(nologin_shell)" --comment "labmesh agent" "$ACCOUNT"
  fi
  if [[ -n $(gid_of docker) ]] && ! in_group "$ACCOUNT" docker; then
    say "adding $ACCOUNT to the docker group (docker checks and the container probe use /var/run/docker.sock)"
    act usermod ${prefix[@]+"${prefix[@]}"} --append --groups docker "$ACCOUNT"
    GROUPS_CHANGED=1
  fi
  ACCOUNT_UID=$(uid_of "$ACCOUNT")
  ACCOUNT_GID=$(gid_of "$ACCOUNT")
  if ((DRY_RUN)) && [[ -z $ACCOUNT_UID ]]; then
    ACCOUNT_UID=$ACCOUNT ACCOUNT_GID=$ACCOUNT # not created under --dry-run: names to print
  fi
}

remove_account() {
  ((CREATE_ACCOUNT)) || return 0
  local prefix=()
  if [[ -n $R ]]; then
    prefix=(--prefix "$R")
  fi
  if [[ -n $(uid_of "$ACCOUNT") ]]; then
    say "removing the user $ACCOUNT"
    act userdel ${prefix[@]+"${prefix[@]}"} "$ACCOUNT"
  fi
  if [[ -n $(gid_of "$ACCOUNT") ]]; then
    say "removing the group $ACCOUNT"
    act groupdel ${prefix[@]+"${prefix[@]}"} "$ACCOUNT"
  fi
}

# ---- the binary --------------------------------------------------------------------------

# Sets BINARY to the binary to install, building it when there is none.
resolve_binary() {
  if [[ -n $BINARY ]]; then
    [[ $BINARY == /* ]] || BINARY=$PWD/$BINARY
    [[ -f $BINARY && -x $BINARY ]] ||
      die "--binary $BINARY: no executable file there (\`cargo build --release -p labmesh\` builds target/release/labmesh)"
  elif [[ -x $REPO/target/release/labmesh ]]; then
    BINARY=$REPO/target/release/labmesh
    note "binary: $BINARY (built earlier: rebuild it first for a newer one, or pass --binary PATH)"
  else
    BINARY=$REPO/target/release/labmesh
    say "building the binary: cargo build --release -p labmesh"
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
      # As the user who ran sudo: their toolchain, and no root-owned files in target/.
      act sudo -u "$SUDO_USER" -H bash -lc 'cd "$1" && cargo build --release --locked -p labmesh' _ "$REPO" ||
        die "cargo build failed as $SUDO_USER: build it yourself (cargo build --release -p labmesh) and run install.sh again, or pass --binary PATH"
    elif command -v cargo >/dev/null 2>&1; then
      act cargo build --release --locked -p labmesh --manifest-path "$REPO/Cargo.toml" ||
        die "cargo build failed: fix the build, or pass --binary PATH"
    else
      die "no labmesh binary: $BINARY does not exist and cargo is not installed (https://rustup.rs). Build it with \`cargo build --release -p labmesh\`, or pass --binary PATH"
    fi
  fi
  if ((DRY_RUN)) && [[ ! -e $BINARY ]]; then
    return 0
  fi
  "$BINARY" --version >/dev/null 2>&1 ||
    die "$BINARY does not run on this host (\`$BINARY --version\` failed): built for another system or architecture? Build it here, or pass --binary PATH"
}

binary_version() {
  "$1" --version 2>/dev/null | head -n 1 || true
}

# Puts the binary in place; WROTE=1 when it changed.
install_binary() {
  local dst=$R$BIN_PATH
  WROTE=0
  if [[ $SCOPE == system ]]; then
    put_file "$BINARY" "$dst" 0755 0 0
    return 0
  fi
  # --user: /usr/local/bin is the user's on many Macs (Homebrew on Intel), root's on others.
  if [[ -f $dst ]] && cmp -s "$BINARY" "$dst"; then
    return 0
  fi
  [[ -d $(dirname "$dst") && -w $(dirname "$dst") ]] ||
    die "$(dirname "$dst") is not writable by $(id -un): put the binary there once with sudo (sudo install -m 0755 $BINARY $BIN_PATH), then run install.sh --user again"
  act cp "$BINARY" "$dst.new"
  act chmod 0755 "$dst.new"
  act mv -f "$dst.new" "$dst"
  WROTE=1
}

# ---- config ------------------------------------------------------------------------------

install_config() {
  ensure_dir "$R$CONF_DIR" 0755 "$FILE_UID" "$FILE_GID"
  if [[ -e $R$CONF ]]; then
    note "config: kept $CONF (never overwritten; every key is documented in deploy/labmesh.example.toml)"
    if ((DRY_RUN)); then
      return 0
    fi
    local mode uid gid
    read -r mode uid gid <<<"$(attrs "$R$CONF")"
    mode=$((8#$mode))
    if ! { ((uid == ACCOUNT_UID && (mode & 8#400))) || ((gid == ACCOUNT_GID && (mode & 8#040))) || ((mode & 8#004)); }; then
      warn "the $ACCOUNT user cannot read $R$CONF, so the agent will not start: chgrp $ACCOUNT $R$CONF && chmod 0640 $R$CONF"
    fi
    return 0
  fi
  [[ -f $EXAMPLE ]] || die "$EXAMPLE is missing: run install.sh from a labmesh checkout (it copies that file to $CONF)"
  say "writing $CONF (deploy/labmesh.example.toml: every key commented out, so the defaults)"
  act cp "$EXAMPLE" "$R$CONF.new"
  act chown "$FILE_UID:$ACCOUNT_GID" "$R$CONF.new"
  act chmod "$CONF_MODE" "$R$CONF.new"
  act mv -f "$R$CONF.new" "$R$CONF"
}

# Sets `seeds = [...]` in the [mesh] section of the config to SEEDS: replaces the seeds key
# there (one line or a multi-line array), else adds it after the commented-out example or
# the section header, else adds a [mesh] section. WROTE=1 when the file changed.
write_seeds() {
  local file=$R$CONF value="" s tmp
  WROTE=0
  for s in "${SEEDS[@]}"; do
    value+="${value:+, }\"$s\""
  done
  value="seeds = [$value]"
  if ((DRY_RUN)) && [[ ! -f $file ]]; then
    printf 'would set %s in the [mesh] section of %s\n' "$value" "$file"
    WROTE=1
    return 0
  fi
  if ((DRY_RUN)); then
    tmp=$(mktemp "${TMPDIR:-/tmp}/labmesh-config.XXXXXX")
  else
    tmp=$(mktemp "$file.XXXXXX") # next to it: mv replaces it atomically
  fi
  if ! awk -v line="$value" '
    function header(l) { return l ~ /^[ \t]*\[\[?[ \t]*[A-Za-z0-9_."-]+[ \t]*\]\]?[ \t]*(#.*)?$/ }
    function is_mesh(l) { return l ~ /^[ \t]*\[[ \t]*"?mesh"?[ \t]*\][ \t]*(#.*)?$/ }
    function depth(l,   t, o, c) { t = l; sub(/#.*/, "", t); o = gsub(/\[/, "[", t); c = gsub(/\]/, "]", t); return o - c }
    # First pass: where the [mesh] header, its seeds key and its commented-out example are.
    NR == FNR {
      if (header($0)) { in_mesh = is_mesh($0); if (in_mesh && !hdr) hdr = FNR; next }
      if (in_mesh && !live && $0 ~ /^[ \t]*seeds[ \t]*=/) live = FNR
      if (in_mesh && !cmt && $0 ~ /^[ \t]*#[ \t]*seeds[ \t]*=/) cmt = FNR
      next
    }
    FNR == 1 { in_mesh = 0; skip = 0 }
    # The rest of a multi-line array being replaced.
    skip > 0 { skip += depth($0); next }
    {
      if (header($0)) in_mesh = is_mesh($0)
      if (in_mesh && $0 ~ /^[ \t]*seeds[ \t]*=/) {
        if (FNR == live) print line # later duplicates are dropped
        s = $0; sub(/^[^=]*=/, "", s); skip = depth(s); if (skip < 0) skip = 0
        next
      }
      print
      if (!live && FNR == (cmt ? cmt : hdr)) print line
    }
    END { if (!hdr) printf "\n[mesh]\n%s\n", line }
  ' "$file" "$file" >"$tmp"; then
    rm -f "$tmp"
    die "could not rewrite $file (awk failed above)"
  fi
  if cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    note "config: $value already in $CONF"
    return 0
  fi
  WROTE=1
  if ((DRY_RUN)); then
    rm -f "$tmp"
    printf 'would set %s in the [mesh] section of %s\n' "$value" "$file"
    return 0
  fi
  local mode uid gid
  read -r mode uid gid <<<"$(attrs "$file")"
  chown "$uid:$gid" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$file"
  say "config: $value in the [mesh] section of $CONF"
}

# ---- service -----------------------------------------------------------------------------

# Checks the service file of this checkout against the paths install.sh uses.
check_service_source() {
  [[ -f $SERVICE_SRC ]] || die "$SERVICE_SRC is missing: run install.sh from a labmesh checkout (deploy/ holds the service files)"
  if [[ $OS == linux ]]; then
    grep -q "^ExecStart=$BIN_PATH\( \|$\)" "$SERVICE_SRC" ||
      die "$SERVICE_SRC does not start $BIN_PATH (its ExecStart= line), where install.sh puts the binary: make them agree"
  else
    grep -q "<string>$BIN_PATH</string>" "$SERVICE_SRC" ||
      die "$SERVICE_SRC does not start $BIN_PATH (ProgramArguments), where install.sh puts the binary: make them agree"
  fi
}

# The service file to install: the plist of --user with its __HOME__ filled in.
service_file_source() {
  if [[ $SCOPE == user ]]; then
    local tmp
    tmp=$(mktemp "${TMPDIR:-/tmp}/labmesh-plist.XXXXXX")
    sed "s|__HOME__|$HOME|g" "$SERVICE_SRC" >"$tmp"
    echo "$tmp"
  else
    echo "$SERVICE_SRC"
  fi
}

# True when the service runs (systemd) or is loaded (launchd); never under --root/--dry-run.
service_active() {
  if ((DRY_RUN)) || [[ -n $ROOT ]] || ((!SERVICE_MANAGER_UP)); then
    return 1
  fi
  if [[ $OS == linux ]]; then
    systemctl is-active --quiet labmesh
  else
    launchctl print "$DOMAIN/$LABEL" >/dev/null 2>&1
  fi
}

# Enables and starts the service. RESTART=1: restart it (new seeds or identity) even when
# nothing else changed; CHANGED=1: something it runs with changed (binary, groups, unit);
# UNIT_CHANGED=1: the unit or plist itself; WAS_ACTIVE=1: it ran before.
activate_service() { # RESTART CHANGED UNIT_CHANGED WAS_ACTIVE
  local restart=$1 changed=$2 unit_changed=$3 was_active=$4 i
  if [[ $OS == linux ]]; then
    svc systemctl daemon-reload
    if ((restart)); then
      svc systemctl enable labmesh
      svc systemctl restart labmesh
    else
      svc systemctl enable --now labmesh
      if ((changed && was_active)); then
        svc systemctl restart labmesh
      fi
    fi
    return 0
  fi
  svc launchctl enable "$DOMAIN/$LABEL"
  if ((was_active && unit_changed)); then
    # launchd reads a plist only when it loads it.
    svc launchctl bootout "$DOMAIN/$LABEL"
    if ((!DRY_RUN)); then
      for i in 1 2 3 4 5 6 7 8 9 10; do
        launchctl print "$DOMAIN/$LABEL" >/dev/null 2>&1 || break
        sleep 1
      done
    fi
    was_active=0
  fi
  if ((was_active)); then
    if ((restart || changed)); then
      svc launchctl kickstart -k "$DOMAIN/$LABEL"
    fi
  else
    svc launchctl bootstrap "$DOMAIN" "$SERVICE_FILE"
  fi
}

# ---- modes -------------------------------------------------------------------------------

this_host() { uname -n | cut -d. -f1; }

do_install() {
  local changed=0 unit_changed=0 was_active=0 restart=0 src me cli=""
  if [[ -n $JOIN ]] || ((${#SEEDS[@]})); then
    restart=1
  fi
  check_service_source
  resolve_binary
  if service_active; then
    was_active=1
  fi

  ensure_account
  if ((GROUPS_CHANGED)); then changed=1; fi

  install_binary
  if ((WROTE)); then
    say "installed $BIN_PATH ($(binary_version "$BINARY"))"
    changed=1
  else
    note "binary: $BIN_PATH is up to date ($(binary_version "$R$BIN_PATH"))"
  fi
  install_config
  ensure_dir "$R$DATA_DIR" 0750 "$ACCOUNT_UID" "$ACCOUNT_GID"
  # After an --uninstall that kept the data, the user may come back with another uid.
  own_tree "$R$DATA_DIR" "$ACCOUNT_UID" "$ACCOUNT_GID"
  if [[ -n $LOG_DIR ]]; then
    ensure_dir "$R$LOG_DIR" 0750 "$ACCOUNT_UID" "$ACCOUNT_GID"
  fi
  src=$(service_file_source)
  put_file "$src" "$R$SERVICE_FILE" 0644 "$FILE_UID" "$FILE_GID"
  [[ $src == "$SERVICE_SRC" ]] || rm -f "$src"
  if ((WROTE)); then
    say "installed $SERVICE_FILE"
    changed=1 unit_changed=1
  else
    note "service: $SERVICE_FILE is up to date"
  fi

  if [[ -n $JOIN ]]; then
    say "importing the join bundle $JOIN"
    if ! act "$R$BIN_PATH" --config "$R$CONF" --data-dir "$R$DATA_DIR" certs import "$JOIN"; then
      if [[ -e $R$DATA_DIR/certs/ca.key ]]; then
        die "$R$DATA_DIR/certs holds the CA of the mesh this node created when it first started alone, so it cannot join another mesh. To set that identity aside: stop the agent, move the folder away (mv '$R$DATA_DIR/certs' '$R$DATA_DIR/certs.own-mesh'), then run this command again"
      fi
      die "\`labmesh certs import $JOIN\` failed (see above): fix what it says, then run this command again"
    fi
    own_tree "$R$DATA_DIR" "$ACCOUNT_UID" "$ACCOUNT_GID"
    note "the bundle holds this node's private key: delete $JOIN now"
  fi
  if ((${#SEEDS[@]})); then
    write_seeds
  fi

  activate_service "$restart" "$changed" "$unit_changed" "$was_active"

  echo
  say "labmesh is installed"
  note "config: $CONF"
  note "data:   $DATA_DIR"
  if [[ $OS == linux ]]; then
    note "logs:   journalctl -u labmesh -f"
    note "status: labmesh status"
  else
    note "logs:   $LOG_DIR/agent.log"
    note "status: labmesh status"
    cli="LABMESH_DATA_DIR='$DATA_DIR' "
  fi
  if [[ -z $JOIN ]] && ((${#SEEDS[@]} == 0)); then
    me=$(this_host)
    me=${me:-THISHOST}
    local sudo="sudo " flag=""
    if [[ $SCOPE == user ]]; then sudo="" flag=" --user"; fi
    echo
    note "Started alone, this node creates a new mesh and holds its CA: it is the CA node."
    note "To add another host OTHER to this mesh, here:"
    note "    ${sudo}${cli}labmesh certs issue OTHER --out OTHER.bundle.json"
    note "then copy the file to OTHER and there:"
    note "    sudo deploy/install.sh --join OTHER.bundle.json --seed $me:7370"
    note "For this host to join an existing mesh instead, on that mesh's CA node:"
    note "    sudo labmesh certs issue $me --out $me.bundle.json"
    note "then copy the file here and here (deploy/install.sh --help, JOINING):"
    note "    ${sudo}deploy/install.sh$flag --join $me.bundle.json --seed CA_HOST:7370"
  fi
}

do_upgrade() {
  [[ -e $R$BIN_PATH ]] ||
    die "labmesh is not installed here ($R$BIN_PATH is missing): install it first with deploy/install.sh (no --upgrade)"
  resolve_binary
  local old
  old=$(binary_version "$R$BIN_PATH")
  if cmp -s "$BINARY" "$R$BIN_PATH"; then
    say "$BIN_PATH is already this binary (${old:-?}): nothing to do"
    return 0
  fi
  install_binary
  say "upgraded $BIN_PATH: ${old:-?} -> $(binary_version "$BINARY")"
  # Only an agent that runs is restarted: an upgrade starts none that was stopped.
  if [[ $OS == linux ]]; then
    svc systemctl try-restart labmesh
  elif service_active || ((DRY_RUN)); then
    svc launchctl kickstart -k "$DOMAIN/$LABEL"
  fi
}

do_uninstall() {
  if [[ -e $R$SERVICE_FILE ]]; then
    say "stopping and disabling the service"
    if [[ $OS == linux ]]; then
      svc systemctl disable --now labmesh
    elif service_active || ((DRY_RUN)); then
      svc launchctl bootout "$DOMAIN/$LABEL"
    fi
    act rm -f "$R$SERVICE_FILE"
    if [[ $OS == linux ]]; then
      svc systemctl daemon-reload
    fi
  else
    note "service: $SERVICE_FILE is not installed"
  fi
  if [[ $OS == linux && -d $R$SERVICE_FILE.d ]]; then
    note "kept $SERVICE_FILE.d (drop-ins with your changes): remove it yourself"
  fi
  if [[ -e $R$BIN_PATH ]]; then
    if [[ $SCOPE == user && -e /Library/LaunchDaemons/com.labmesh.agent.plist ]]; then
      note "kept $BIN_PATH: the system daemon uses it too"
    elif [[ $SCOPE == user && ! -w $(dirname "$R$BIN_PATH") ]]; then
      note "kept $BIN_PATH ($(dirname "$BIN_PATH") is not writable for $(id -un)): sudo rm $BIN_PATH"
    else
      say "removing $BIN_PATH"
      act rm -f "$R$BIN_PATH"
    fi
  fi
  if [[ -e $R$CONF_DIR ]]; then
    say "removing $CONF_DIR (the config)"
    act rm -rf "$R$CONF_DIR"
  fi
  remove_account
  local d
  for d in "$DATA_DIR" ${LOG_DIR:+"$LOG_DIR"}; do
    [[ -e $R$d ]] || continue
    if ((PURGE)); then
      say "removing $d"
      act rm -rf "$R$d"
    else
      note "kept $d (--uninstall --purge removes it)"
    fi
  done
  say "labmesh is uninstalled"
}

ACCOUNT_UID=""
ACCOUNT_GID=""
FILE_UID=0 # the owner of the binary, the unit and the config dir: root, or the --user
FILE_GID=0
WROTE=0
GROUPS_CHANGED=0
case $MODE in
  install) do_install ;;
  upgrade) do_upgrade ;;
  uninstall) do_uninstall ;;
esac
