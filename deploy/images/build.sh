#!/usr/bin/env bash
# Builds the minima container images without pulling anything: each image is
# `FROM scratch` holding one binary built here, the shared libraries it links
# (found with ldd, copied to the same paths), a writable /tmp and /data, and a
# non-root user.
#
#   deploy/images/build.sh                   # cargo build --release, then both images
#   deploy/images/build.sh --bin-dir DIR     # images of binaries already built in DIR
#   deploy/images/build.sh --tag 0.1.0       # tag other than `latest`
#
# Images: minima-coordinator:<tag> (entrypoint /bin/coordinator) and
# minima-worker:<tag> (entrypoint /bin/worker).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=""
tag=latest
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$(cd "$2" && pwd); shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ! docker info >/dev/null 2>&1; then
    echo "build.sh: no Docker engine answers (is the daemon running, may this user use it?)" >&2
    exit 2
fi
if [ -z "$bin_dir" ]; then
    (cd "$root" && cargo build --release --locked -p minima-coordinator -p minima-worker)
    bin_dir=$root/target/release
fi

# build_image NAME BINARY
build_image() {
    local name=$1 binary=$2
    if [ ! -x "$binary" ]; then
        echo "build.sh: $binary is missing; build it first" >&2
        exit 2
    fi
    local context
    context=$(mktemp -d)
    trap 'rm -rf "$context"' RETURN
    mkdir -p "$context/rootfs/bin" "$context/rootfs/etc" "$context/rootfs/tmp" "$context/data"
    chmod 1777 "$context/rootfs/tmp"
    # Debug information is for the build machine; the image gets the code.
    objcopy --strip-debug "$binary" "$context/rootfs/bin/$(basename "$binary")"
    # Every shared library the binary loads, and the dynamic loader.
    ldd "$binary" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | sort -u |
        while read -r lib; do
            mkdir -p "$context/rootfs$(dirname "$lib")"
            cp -L "$lib" "$context/rootfs$lib"
        done
    echo "minima:x:1000:1000:minima:/data:/bin/false" > "$context/rootfs/etc/passwd"
    echo "minima:x:1000:" > "$context/rootfs/etc/group"
    echo "hosts: files dns" > "$context/rootfs/etc/nsswitch.conf"
    cat > "$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=1000:1000 data/ /data/
USER 1000:1000
WORKDIR /data
ENTRYPOINT ["/bin/$(basename "$binary")"]
DOCKERFILE
    docker build --quiet --tag "$name:$tag" "$context" >/dev/null
    echo "built $name:$tag ($(docker image inspect --format '{{.Size}}' "$name:$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

build_image minima-coordinator "$bin_dir/coordinator"
build_image minima-worker "$bin_dir/worker"
