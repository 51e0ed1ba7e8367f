#!/usr/bin/env bash
# Install and start the system parts the test suite talks to for real:
# PostgreSQL (the harness starts its own throwaway server), a Docker engine,
# bubblewrap and debootstrap (to build the sandbox image locally).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v dockerd >/dev/null || need+=(docker.io)
command -v wrk >/dev/null || need+=(wrk)

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  $SUDO sh -c 'nohup dockerd >/var/log/jetty-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /var/log/jetty-dockerd.log" >&2; exit 1; }
fi
echo "system test dependencies ready"
