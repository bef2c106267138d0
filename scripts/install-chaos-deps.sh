#!/usr/bin/env bash
# Installs what the chaos suite (chaos/, make chaos, make soak) needs beyond the Python venv:
# iptables (partitions inside network namespaces, nft backend), iproute2 (ip netns), FUSE 2
# and 3 (the power-loss filesystem: fusepy loads libfuse2, fuse3 brings fusermount and
# /dev/fuse handling). Clock faults need nothing: libfaketime breaks Python's sleeps when told to
# leave the monotonic clock alone, so chaos/clockshim fakes the wall clock inside the broker.
# Idempotent; runs as root without stdin in CI.
set -euo pipefail

APT_PACKAGES=(iptables iproute2 fuse3 libfuse2)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=apt.sh
source "$ROOT/scripts/apt.sh"
mapfile -t missing < <(apt_missing "${APT_PACKAGES[@]}")
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
else
    echo "apt: ${APT_PACKAGES[*]} already installed"
fi
