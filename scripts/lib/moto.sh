# moto_server (PyPI moto[server]) for the object storage tests
# (tests/s3.rs, tests/common/moto.rs): a virtualenv at $PITRKIT_MOTO_VENV
# (default /opt/pitrkit-moto as root, else ~/.cache/pitrkit/moto). Sourced by scripts/test.sh; needs python3
# with venv (Debian: python3-venv, which apt.sh installs when missing).
if [ "$(id -u)" = 0 ]; then
    moto_venv="${PITRKIT_MOTO_VENV:-/opt/pitrkit-moto}"
else
    moto_venv="${PITRKIT_MOTO_VENV:-$HOME/.cache/pitrkit/moto}"
fi
export PITRKIT_MOTO_VENV="$moto_venv"

# Installs moto into the virtualenv unless its moto_server is there.
install_moto() {
    [ -x "$moto_venv/bin/moto_server" ] && return 0
    echo "moto.sh: installing moto[server] into $moto_venv (the S3 server of the tests)"
    local start=$SECONDS
    rm -rf "$moto_venv"
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
    [ -x "$moto_venv/bin/moto_server" ] || { echo "moto.sh: moto_server missing after pip install" >&2; return 1; }
    echo "moto.sh: moto installed in $((SECONDS - start)) s"
}
