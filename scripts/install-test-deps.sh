#!/usr/bin/env bash
# Installs what the test suites need beyond the Python venv: for tests/interop Debian's
# nats-server and libnats-dev and the npm `nats` client in tests/interop/node; for tests/deploy
# a helm binary (scripts/install-helm.sh) and openssl (the stand-in Kubernetes API's certificate).
# Idempotent and quick when everything is present; runs as root without stdin in CI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/tests/interop/node"
APT_PACKAGES=(nats-server libnats-dev gcc openssl)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Machines normally come with Node.js and npm; fall back to Debian's only if they are absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
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

installed="$NODE_DIR/node_modules/.package-lock.json"
if [[ -f "$installed" && "$installed" -nt "$NODE_DIR/package-lock.json" ]]; then
    echo "npm: nats $(node -p "require('$NODE_DIR/node_modules/nats/package.json').version") already installed in tests/interop/node"
else
    echo "npm: npm ci in tests/interop/node"
    npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error >/dev/null
fi

bash "$ROOT/scripts/install-helm.sh"
