# Sourced by scripts/serve.sh and scripts/test.sh: sets PY to a Python (3.11 or newer) inside a
# virtualenv, and BIN to that virtualenv's bin/.
#
# Debian 12 and Ubuntu 24.04 refuse `pip install` into their own Python (PEP 668:
# "externally-managed-environment"), so outside a virtualenv we make one, .venv in the checkout,
# installing python3-venv first where Debian left it out. Inside an active virtualenv, we use it.
# PYTHON=python3.12 picks the interpreter (default python3).

_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_SUDO=""
[ "$(id -u)" -eq 0 ] || _SUDO="sudo"

_apt() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "qwengw: need $*; install it with your package manager, then run this again" >&2
        exit 1
    fi
    echo "installing Debian packages: $*" >&2
    $_SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $_SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

_python="${PYTHON:-python3}"
command -v "$_python" >/dev/null 2>&1 || _apt python3 python3-venv
if ! "$_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "qwengw: $_python is Python $("$_python" -c 'import sys; print(sys.version.split()[0])')," \
        "qwengw needs 3.11 or newer: install one (e.g. python3.11-venv) and run" \
        "PYTHON=python3.11 $0" >&2
    exit 1
fi

if "$_python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    PY="$_python"  # an active virtualenv: the user's choice
elif [ -x "$_ROOT/.venv/bin/python" ] && "$_ROOT/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
    PY="$_ROOT/.venv/bin/python"
else
    rm -rf "$_ROOT/.venv"
    if ! "$_python" -m venv "$_ROOT/.venv" >/dev/null 2>&1; then
        # Debian/Ubuntu ship venv's pip bootstrap (ensurepip) separately.
        rm -rf "$_ROOT/.venv"
        _apt "python3-venv" "python$("$_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
        "$_python" -m venv "$_ROOT/.venv"
    fi
    PY="$_ROOT/.venv/bin/python"
    echo "made a virtualenv for qwengw: $_ROOT/.venv (activate it: . .venv/bin/activate)" >&2
fi
BIN="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")"
unset _python
