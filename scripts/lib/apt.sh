# Sourced by the scripts: installs missing Debian packages with apt-get.
#   apt_install_missing <caller> <package>...   (nothing to do for an empty list)
apt_install_missing() {
    local caller=$1
    shift
    [ $# -gt 0 ] || return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "$caller: installing $*" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What building pitrkit needs besides Rust: the openssl crate links the
# system's OpenSSL (as libpq does).
build_needs() {
    pkg-config --exists openssl 2>/dev/null || echo libssl-dev pkg-config
}
