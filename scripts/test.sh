#!/usr/bin/env bash
# Install everything the test suite needs, then run it, then the style check. Used by the README
# and by .ci/run.
#   bash scripts/test.sh [pytest args...]
# Python packages go into a virtualenv: the active one, else .venv in the checkout (made when
# needed, see scripts/venv.sh), never into Debian's own Python (PEP 668).
# Needs root (or sudo) for the Debian packages: nginx-light and redis-server, whose binaries the
# tests start themselves on loopback high ports (the system services are left alone/stopped).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# Tools the tests run, without their recommended extras: promtool (from the prometheus package)
# checks and unit-tests the alert rules; headless chromium renders the HTML report.
need_tools=()
command -v promtool >/dev/null 2>&1 || need_tools+=(prometheus)
command -v chromium >/dev/null 2>&1 || need_tools+=(chromium fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_tools[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need_apt[*]} ${need_tools[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    if [ ${#need_apt[@]} -gt 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
    if [ ${#need_tools[@]} -gt 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need_tools[@]}" >/dev/null
    fi
    # The tests run their own nginx and redis, and only promtool; the distro services are not
    # needed.
    $SUDO service nginx stop >/dev/null 2>&1 || true
    $SUDO service redis-server stop >/dev/null 2>&1 || true
    $SUDO service prometheus stop >/dev/null 2>&1 || true
fi

. scripts/venv.sh
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'

# gixy-ng ships a crossplane fork under the same package name, so it gets its own venv.
GIXY_VENV="${QWENGW_GIXY_VENV:-/opt/gixy-venv}"
if [ ! -x "$GIXY_VENV/bin/gixy" ]; then
    $SUDO python3 -m venv "$GIXY_VENV"
    $SUDO "$GIXY_VENV/bin/pip" install -q --disable-pip-version-check gixy-ng
fi
export QWENGW_GIXY="$GIXY_VENV/bin/gixy"

status=0
"$PY" -m pytest "$@" || status=$?

# The style check (docs/development.md), with the pinned ruff from the test extra.
style=0
"$PY" -m ruff check -q . || style=1
"$PY" -m ruff format -q --check . || style=1
if [ "$style" -ne 0 ]; then
    echo >&2
    echo "STYLE CHECK FAILED (ruff $("$PY" -m ruff --version | cut -d' ' -f2)). Fix it with:" >&2
    echo "    $BIN/ruff check --fix . && $BIN/ruff format ." >&2
    [ "$status" -ne 0 ] || status=1
fi
exit "$status"
