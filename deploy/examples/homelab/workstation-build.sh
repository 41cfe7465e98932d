#!/usr/bin/env bash
# workstation-build.sh: Build the CUDA binary on workstation.home.arpa (cuda backend), recorded by labmesh (issue #15).
#
# Before, this script printed boxes and timestamps and left nothing behind (the
# "TEAM-019: Hook ... telemetry here" comments). Now `labmesh run` wraps the work: it records
# build_started / build_completed | build_failed events (git commit and branch, duration, exit code,
# phases, warnings, binary size),
# keeps a redacted log in <data>/logs/runs/, and the local agent exports
# homelab_build_* metrics for Prometheus (deploy/grafana/dashboards/labmesh-builds.json).
#
# Run it on workstation.home.arpa itself (labmesh records the host it runs on); the agent there
# need not be running: the events are picked up when it starts.
set -euo pipefail

REPO_DIR="${REPO_DIR:-$HOME/Projects/llama-orch}"
SERVICE="${SERVICE:-llm-worker-rbee}"
BACKEND="cuda"
FEATURES="cuda"
BINARY="$REPO_DIR/target/release/$SERVICE"

cd "$REPO_DIR"

# The wrapped body runs as one command: `labmesh run phase NAME` marks where each phase begins
# (the previous one ends), so the end event carries per-phase durations. `--git-pull` records
# the repo sync as the `repo_sync` phase before the body starts.
exec labmesh run \
  --kind build \
  --service "$SERVICE" \
  --backend "$BACKEND" \
  --artifact "$BINARY" \
  --script "$(basename "$0")" \
  --git-pull \
  -- bash -euo pipefail -c '
    labmesh run phase toolchain
    rustc --version
    cargo --version

    labmesh run phase compile
    cargo build --release --features "$1" --bin "$2"

    labmesh run phase clippy
    cargo clippy --release --features "$1" --bin "$2"
  ' build "$FEATURES" "$SERVICE"
