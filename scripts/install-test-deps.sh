#!/usr/bin/env bash
# Installs what the test suites need beyond the Python venv: for tests/interop Debian's
# nats-server and libnats-dev and the npm `nats` client in tests/interop/node; for tests/deploy
# a helm binary (scripts/install-helm.sh) and openssl (the stand-in Kubernetes API's certificate).
# Idempotent and quick when everything is present; runs as root without stdin in CI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/tests/interop/node"
APT_PACKAGES=(nats-server libnats-dev gcc openssl)

# shellcheck source=apt.sh
source "$ROOT/scripts/apt.sh"
mapfile -t missing < <(apt_missing "${APT_PACKAGES[@]}")
# Machines normally come with Node.js and npm; fall back to Debian's only if they are absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
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
