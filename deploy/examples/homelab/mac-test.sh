#!/usr/bin/env bash
# mac-test.sh: Run the Metal tests on mac.home.arpa (metal backend), recorded by labmesh (issue #15).
#
# Before, this script printed boxes and timestamps and left nothing behind (the
# "TEAM-019: Hook ... telemetry here" comments). Now `labmesh run` wraps the work: it records
# test_started / test_completed | test_failed events (git commit and branch, duration, exit code,
# phases, tests run/passed/failed/ignored),
# keeps a redacted log in <data>/logs/runs/, and the local agent exports
# homelab_test_* metrics for Prometheus (deploy/grafana/dashboards/labmesh-builds.json).
#
# Run it on mac.home.arpa itself (labmesh records the host it runs on); the agent there
# need not be running: the events are picked up when it starts.
set -euo pipefail

REPO_DIR="${REPO_DIR:-$HOME/Projects/llama-orch}"
SERVICE="${SERVICE:-llm-worker-rbee}"
BACKEND="metal"
FEATURES="metal"

cd "$REPO_DIR"

exec labmesh run \
  --kind test \
  --service "$SERVICE" \
  --backend "$BACKEND" \
  --script "$(basename "$0")" \
  --git-pull \
  -- bash -euo pipefail -c '
    labmesh run phase environment
    sw_vers || true
    system_profiler SPDisplaysDataType 2>/dev/null | grep -E "Chipset|Metal" || true

    labmesh run phase unit
    cargo test --release --features "$1" --lib -- --nocapture

    labmesh run phase integration
    cargo test --release --features "$1" --tests -- --nocapture
  ' test "$FEATURES"
