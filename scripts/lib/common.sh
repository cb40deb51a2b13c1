# scripts/lib/common.sh: shared by scripts/test, its helpers in scripts/lib/ and scripts/showcase
# (sourced, not run).

# show_tail LOG [LINES]: the end of a quiet log, framed.
show_tail() {
    echo "----- last ${2:-40} lines of $1 -----"
    tail -n "${2:-40}" "$1"
    echo "----- end of $1 -----"
}

# debian_packages TAG: the packages scripts/lib/packages lists for TAG (test, showcase), one a line.
debian_packages() {
    local list
    list=$(dirname "${BASH_SOURCE[0]}")/packages
    awk -v tag="$1" '{ sub(/#.*/, "") } NF { for (i = 2; i <= NF; i++) if ($i == tag) { print $1; next } }' "$list"
}

# ensure_debian_packages PKG...: install what is missing (as root: apt-get update + install,
# non-interactive, one progress line per package, the full log kept on failure); as another user
# print the command to run as root (minimal Debian has no sudo) and exit 1.
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
    local cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]}" >&2
        echo "install them as root:" >&2
        echo "  $cmd" >&2
        echo "(from this account: su -c '$cmd'; or with sudo, if installed, before each apt-get)" >&2
        exit 1
    fi
    local log
    log=$(mktemp /tmp/rtdefer-apt.XXXXXX.log)
    echo "installing missing Debian packages (log: $log): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "  apt-get update…"
    if ! apt-get update -q >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "error: apt-get update failed (full log: $log)" >&2
        exit 1
    fi
    # Progress: apt's summary line, then one line per package set up ([k/N]); everything to the log.
    apt-get install -y -q --no-install-recommends -o Dpkg::Progress-Fancy=0 "${missing[@]}" 2>&1 |
        tee -a "$log" | awk '
            / upgraded, .* newly installed/ { split($0, f, /[ ,]+/); total = f[1] + f[3]; print "  " $0; fflush() }
            /^Need to get/     { print "  " $0 " (downloading…)"; fflush() }
            /^Setting up /     { k++; sub(/ \.\.\.$/, ""); printf "  [%d/%d] %s\n", k, total, $0; fflush() }'
    if ((PIPESTATUS[0] != 0)); then
        tail -n 30 "$log" >&2
        echo "error: apt-get install failed (full log: $log); the command was:" >&2
        echo "  $cmd" >&2
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
    # The stamp covers the native files' contents too: a reconfigure would ignore their changes.
    local src=$PWD stamp="CXX=${CXX:-} $*" scratch rc a
    for a in "$@"; do
        a=${a#--native-file=}
        [[ $a == *.ini && -f $a ]] && stamp+=" $(sha256sum <"$a")"
    done
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
