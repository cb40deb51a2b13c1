# scripts/lib/common.sh: shared by scripts/test and scripts/showcase (sourced, not run).

# ensure_debian_packages PKG...: install what is missing (as root: apt-get update + install,
# non-interactive); as another user print the exact `sudo apt-get install` line and exit 1.
ensure_debian_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "warning: dpkg-query not found (not Debian?): cannot check for: $*" >&2
        echo "warning: continuing; the build will fail if any of them is missing" >&2
        return 0
    fi
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]}" >&2
        echo "install them with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    local log
    log=$(mktemp)
    echo "installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -q >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "error: apt-get update failed" >&2
        exit 1
    fi
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "error: apt-get install -y ${missing[*]} failed" >&2
        exit 1
    fi
    rm -f "$log"
}

# meson_setup DIR ARGS...: configure DIR (absolute) for the source tree in the current directory.
# An existing tree configured with the same arguments (and compiler) is reconfigured, which picks
# up new source files; otherwise it is wiped first, because meson 1.0 ignores a changed cpp_args
# on --reconfigure. meson runs from a private scratch directory: its cmake module runs
# `cmake --system-information` in the working directory, and two configures sharing one (another
# build of the same tree, say) break each other with "CMAKE_CXX_COMPILER not set".
meson_setup() {
    local dir=$1
    shift
    local src=$PWD stamp="CXX=${CXX:-} $*" scratch rc
    scratch=$(mktemp -d)
    if [[ -f $dir/meson-private/coredata.dat && -f $dir/.rtdefer-setup && $(<"$dir/.rtdefer-setup") == "$stamp" ]]; then
        (cd "$scratch" && meson setup --reconfigure "$dir" "$src" "$@")
        rc=$?
        if ((rc == 0)); then
            rm -rf "$scratch"
            return 0
        fi
    fi
    rm -rf "$dir"
    (cd "$scratch" && meson setup "$dir" "$src" "$@")
    rc=$?
    rm -rf "$scratch"
    ((rc == 0)) || return 1
    printf '%s' "$stamp" >"$dir/.rtdefer-setup"
}
