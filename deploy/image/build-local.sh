#!/usr/bin/env bash
# Builds a `FROM scratch` image of an already-built `shoal` binary, with no base image to
# pull: the binary (debug symbols stripped), the shared libraries `ldd` names and their
# loader, an /etc/passwd with the non-root user 65532, and /data owned by it. This is the
# image CI builds and tests (crates/broker/tests/deploy.rs); deploy/Dockerfile is the one
# for users, which compiles inside a Rust image and runs on distroless.
#
#     deploy/image/build-local.sh [BINARY] [TAG]
#
# BINARY defaults to target/release/shoal, else target/debug/shoal; TAG to shoal:local.
# The resulting image behaves as deploy/Dockerfile's: same user, volume, ports, defaults.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
binary="${1:-}"
tag="${2:-shoal:local}"
if [ -z "$binary" ]; then
    for candidate in "$root/target/release/shoal" "$root/target/debug/shoal"; do
        [ -x "$candidate" ] && { binary="$candidate"; break; }
    done
fi
[ -n "$binary" ] && [ -x "$binary" ] || {
    echo "build-local.sh: no shoal binary (build one: cargo build --release -p shoal-broker)" >&2
    exit 2
}
command -v docker >/dev/null || { echo "build-local.sh: docker not found" >&2; exit 2; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc" "$context/rootfs/data" "$context/rootfs/tmp"
chmod 1777 "$context/rootfs/tmp"
if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$binary" "$context/rootfs/usr/local/bin/shoal"
else
    cp "$binary" "$context/rootfs/usr/local/bin/shoal"
fi
chmod 0755 "$context/rootfs/usr/local/bin/shoal"
# Every library the dynamic binary needs, at the path the loader looks for it.
ldd "$binary" | awk '/=> \//{print $3} $1 ~ /^\//{print $1}' | sort -u | while read -r lib; do
    mkdir -p "$context/rootfs$(dirname "$lib")"
    cp -L "$lib" "$context/rootfs$lib"
done
printf 'root:x:0:0:root:/:/sbin/nologin\nshoal:x:65532:65532:shoal:/data:/sbin/nologin\n' >"$context/rootfs/etc/passwd"
printf 'root:x:0:\nshoal:x:65532:\n' >"$context/rootfs/etc/group"
# One tar, so that ownership is exact without root: everything root's, /data the user's.
tar -C "$context/rootfs" --numeric-owner --owner=0 --group=0 --exclude=./data -cf "$context/rootfs.tar" .
tar -C "$context/rootfs" --numeric-owner --owner=65532 --group=65532 -rf "$context/rootfs.tar" ./data
rm -rf "$context/rootfs"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD rootfs.tar /
ENV SHOAL_DATA_DIR=/data \
    SHOAL_LISTEN=0.0.0.0:1883 \
    SHOAL_ADMIN_LISTEN=0.0.0.0:18083
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 1883 8883 8083 8084 14567/udp 18083 7946
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shoal"]
DOCKERFILE
# The classic builder: this engine has no BuildKit plugin, and nothing here needs it.
DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$context" >/dev/null
echo "$tag"
