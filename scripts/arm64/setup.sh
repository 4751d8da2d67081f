#!/usr/bin/env bash
# An arm64 (aarch64) Debian bookworm root for running the runtime under QEMU user emulation,
# built from scratch once and cached; re-running reuses it. Run as root on Debian (x86-64).
#
#   scripts/arm64/setup.sh [--python HOSTPY] [--cache DIR]
#
#   1. host packages: qemu-user-static, binfmt-support, g++-aarch64-linux-gnu, debootstrap,
#      cmake, ccache (the cross build's compiler cache) and file
#      (apt-get install, only what is missing);
#   2. binfmt_misc: mounted and qemu-aarch64 enabled where the kernel allows, so that aarch64
#      programs run directly; otherwise every program is started as `qemu-aarch64-static PROG`
#      (MODE=explicit). Either way QEMU_LD_PREFIX=ROOT makes QEMU resolve the program's absolute
#      paths (/lib/ld-linux-aarch64.so.1, /usr/lib/python3.11, ...) inside ROOT first, and
#      QEMU_CPU=cortex-a76 keeps SVE/SME out (onnxruntime runs ~17x slower with them emulated);
#   3. ROOT: `debootstrap --foreign --variant=minbase` (download and unpack only, no arm64 code
#      runs) plus python3, python3-venv, libstdc++6 and the -dev packages the C++ runtime builds
#      against (libpng, libssl, zlib, nlohmann-json, catch2), every .deb unpacked with
#      dpkg-deb; no maintainer script runs, so no second stage is needed. ROOT/proc holds only
#      an ARM cpuinfo (a Cortex-A78AE's, Jetson Orin): QEMU 7.2 would show the x86 host's and
#      `import onnxruntime` segfaults on it;
#   4. the Python packages the runtime needs, as a Jetson has them from JetPack or pip: the
#      aarch64 wheels of the versions HOSTPY (the x86 runtime's interpreter) has, installed by
#      the host's pip into ROOT's system site-packages (/usr/local/lib/python3.11/dist-packages),
#      with pip and setuptools; a smoke test imports onnxruntime under emulation.
#
# The cache (default ~/.cache/bld/arm64, or $BLD_ARM64_CACHE) holds root-KEY, KEY a hash of
# this script, cpuinfo and the pinned versions: changing any of them builds a new root (older
# roots are removed). The .debs and wheels are cached beside it. The last lines printed are
#   ROOT=/path/to/root  and  MODE=binfmt|explicit  (also written to CACHE/current.env).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
python="python3"
cache="${BLD_ARM64_CACHE:-$HOME/.cache/bld/arm64}"
mirror_uri="${BLD_ARM64_MIRROR:-http://deb.debian.org/debian}"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --cache) cache="$2"; shift 2 ;;
        *) echo "usage: $0 [--python HOSTPY] [--cache DIR]" >&2; exit 2 ;;
    esac
done
log() { echo "arm64-setup: $*" >&2; }
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

# One setup at a time (CI's test and a developer's `make arm64-check` may overlap).
exec 9>"$cache/.lock"
flock 9

# --- 1. host packages ------------------------------------------------------------------------
missing=()
for pkg in qemu-user-static binfmt-support g++-aarch64-linux-gnu debootstrap cmake ccache file; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. binfmt_misc (best effort; checked below by running an aarch64 program) ----------------
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [ -e /proc/sys/fs/binfmt_misc/status ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi

# --- 3. the root, keyed by the recipe ----------------------------------------------------------
pins="$("$python" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("numpy", "onnxruntime", "pillow", "click", "rich")))
EOF
)"
tools="pip==25.3 setuptools==80.9.0 wheel==0.45.1"
key="$(cat "$0" "$here/cpuinfo" <(echo "$pins $tools $mirror_uri") | sha256sum | cut -c1-16)"
root="$cache/root-$key"
export QEMU_CPU=cortex-a76 QEMU_LD_PREFIX="$root"

if [ ! -f "$root/.complete" ]; then
    start=$SECONDS
    for old in "$cache"/root-*; do  # other recipes' roots and interrupted builds
        [ -e "$old" ] && [ "$old" != "$root" ] && rm -rf "$old"
    done
    rm -rf "$root"
    mkdir -p "$cache/debs"
    log "building $root (debootstrap arm64 bookworm, unpack only)"
    debootstrap --arch=arm64 --foreign --variant=minbase --cache-dir="$cache/debs" \
        --include=python3,python3-venv,libstdc++6,libpng-dev,libssl-dev,zlib1g-dev,nlohmann-json3-dev,catch2 \
        bookworm "$root" "$mirror_uri" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    # The first stage unpacked the base; unpack every package (scripts never run). The root is
    # merged-/usr: keep its /lib -> usr/lib links when a package lists /lib.
    for deb in "$root"/var/cache/apt/archives/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root" -f -
    done
    rm -f "$root"/var/cache/apt/archives/*.deb
    rm -rf "$root/proc" && mkdir "$root/proc" && cp "$here/cpuinfo" "$root/proc/cpuinfo"
    log "unpacked in $((SECONDS - start)) s; installing the aarch64 wheels ($pins)"
    # The host's pip fetches and installs the aarch64 wheels (no arm64 code runs for it): the
    # files a Jetson's `pip install` would install.
    site="$root/usr/local/lib/python3.11/dist-packages"
    PIP_FIND_LINKS="" "$python" -m pip install -q --no-compile --cache-dir "$cache/pip" \
        --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 \
        --abi none --platform manylinux_2_36_aarch64 --platform manylinux_2_28_aarch64 \
        --platform manylinux2014_aarch64 --platform any --target "$site" $pins $tools \
        >"$cache/pip.log" 2>&1 || { grep -v "is ignored" "$cache/pip.log" | tail -n 20 >&2; exit 1; }
    touch "$root/.recipe-$key"
    echo "$((SECONDS - start))" > "$root/.setup-seconds"
    touch "$root/.complete"
    log "root ready in $((SECONDS - start)) s"
fi

# --- which way aarch64 programs start ---------------------------------------------------------
mode=explicit
if "$root/usr/bin/true" 2>/dev/null; then
    mode=binfmt
elif ! qemu-aarch64-static "$root/usr/bin/true"; then
    log "cannot run aarch64 programs, neither through binfmt_misc nor qemu-aarch64-static"
    exit 1
fi
runner=()
[ "$mode" = explicit ] && runner=(qemu-aarch64-static)
if ! check="$("${runner[@]}" "$root/usr/bin/python3" -c \
    'import platform, onnxruntime, numpy, PIL; print(platform.machine(), onnxruntime.__version__)' 2>&1)"; then
    log "the arm64 python cannot import the runtime's packages: $check"
    exit 1
fi
log "$check under qemu-aarch64 (QEMU_CPU=$QEMU_CPU, $mode)"
printf 'ROOT=%s\nMODE=%s\n' "$root" "$mode" | tee "$cache/current.env"
