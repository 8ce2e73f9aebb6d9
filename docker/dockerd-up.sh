#!/usr/bin/env bash
# Start the Docker daemon if none answers (this platform has no systemd).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd not found: run make install (installs docker.io)" >&2; exit 1; }
nohup dockerd >/tmp/ragpg-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { echo "dockerd started"; exit 0; }
  sleep 1
done
echo "dockerd did not start; see /tmp/ragpg-dockerd.log" >&2; tail -20 /tmp/ragpg-dockerd.log >&2; exit 1
