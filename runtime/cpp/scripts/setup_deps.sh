#!/usr/bin/env bash
# Prepare what the C++ runtime builds against, on Debian (as root, for apt-get install):
#   1. nlohmann-json3-dev, libpng-dev, libssl-dev and catch2 from the machine's own Debian
#      release, installed only when missing;
#   2. ONNX Runtime's C/C++ headers: Debian trixie's libonnxruntime-dev (1.21, ORT_API_VERSION
#      21), fetched with a private apt configuration and unpacked into DEST, never installed
#      into the system (these machines run bookworm, which has no such package);
#   3. the library: the libonnxruntime.so.1.* inside the onnxruntime wheel of PYTHON, linked
#      as DEST/lib/libonnxruntime.so.1 (its SONAME). The library is newer than the headers,
#      which is fine: ORT keeps its C API backwards compatible.
# Afterwards DEST is an ONNXRUNTIME_ROOT laid out like ORT's release tarball (include/, lib/).
# Usage: setup_deps.sh [--python PYTHON] [--dest DEST]. Re-running skips what is done.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
python="python3"
dest="$here/.deps/onnxruntime"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --dest) dest="$2"; shift 2 ;;
        *) echo "usage: $0 [--python PYTHON] [--dest DEST]" >&2; exit 2 ;;
    esac
done

# --- 1. Debian packages ----------------------------------------------------------------
missing=()
for pkg in nlohmann-json3-dev libpng-dev libssl-dev catch2 zlib1g-dev; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup_deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. ONNX Runtime headers from trixie, with a private apt configuration -----------------
# The mirror is the one this machine's apt already uses for its own release.
mirror() {
    local codename
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    {
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null
        echo
    } | awk -v want="$codename" '
        /^[ \t]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) hit = 1 }'
    grep -hE "^deb[[:space:]]" /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -E 's/\[[^]]*\]//' | awk -v want="$codename" '$3 == want { print $2 }' || true
}

if [ ! -f "$dest/include/onnxruntime_c_api.h" ]; then
    uri="$(mirror | head -n 1)"
    if [ -z "$uri" ]; then
        echo "setup_deps: cannot find this machine's Debian mirror in /etc/apt" >&2
        exit 1
    fi
    apt_dir="$here/.deps/apt"
    rm -rf "$apt_dir" && mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" \
        > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
              -o Debug::NoLocking=1)
    echo "setup_deps: fetching libonnxruntime-dev (trixie) into $dest"
    apt-get "${apt_opts[@]}" update -qq
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" download libonnxruntime-dev >/dev/null)
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    dpkg -x "$apt_dir"/libonnxruntime-dev_*.deb "$dest.tmp/deb"
    mkdir -p "$dest.tmp/include"
    cp "$dest.tmp"/deb/usr/include/onnxruntime/*.h "$dest.tmp/include/"
    rm -rf "$dest.tmp/deb" "$apt_dir" "$dest"
    mv "$dest.tmp" "$dest"
fi

# --- 3. the library of the onnxruntime wheel ---------------------------------------------
capi="$("$python" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
lib="$(ls "$capi"/libonnxruntime.so.1.* 2>/dev/null | head -n 1)"
if [ -z "$lib" ]; then
    echo "setup_deps: the onnxruntime wheel of $python has no libonnxruntime.so.1.* in $capi" >&2
    exit 1
fi
mkdir -p "$dest/lib"
ln -sfn "$lib" "$dest/lib/libonnxruntime.so.1"
ln -sfn libonnxruntime.so.1 "$dest/lib/libonnxruntime.so"
echo "setup_deps: ONNXRUNTIME_ROOT=$dest ($(grep -m1 -o 'ORT_API_VERSION [0-9]*' "$dest/include/onnxruntime_c_api.h"), library $(basename "$lib"))"
