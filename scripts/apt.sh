# Sourced by the install scripts: apt_missing lists which Debian packages are not installed,
# apt_install installs the given ones quietly (as root, or with sudo -n), printing apt's log
# only when it fails. Runs without stdin in CI.

apt_missing() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

apt_install() {
    local sudo=() log
    [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
    echo "apt: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    if ! { "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1; then
        cat "$log" >&2
        return 1
    fi
    rm -f "$log"
}
