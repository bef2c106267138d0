#!/usr/bin/env bash
# Installs what the chaos suite (chaos/, make chaos, make soak) needs beyond the Python venv:
# iptables (partitions inside network namespaces, nft backend), iproute2 (ip netns), FUSE 2
# and 3 (the power-loss filesystem: fusepy loads libfuse2, fuse3 brings fusermount and
# /dev/fuse handling). Clock faults need nothing: libfaketime breaks Python's sleeps when told to
# leave the monotonic clock alone, so chaos/clockshim fakes the wall clock inside the broker.
# Idempotent; runs as root without stdin in CI.
set -euo pipefail

APT_PACKAGES=(iptables iproute2 fuse3 libfuse2)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=()
    [[ $(id -u) -eq 0 ]] || SUDO=(sudo -n)
    echo "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    if ! { "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
    rm -f "$log"
else
    echo "apt: ${APT_PACKAGES[*]} already installed"
fi
