#!/usr/bin/env bash
# The README's run command: install qwengw into a virtualenv (.venv in the checkout, made when
# needed: see scripts/venv.sh), then start the gateway in the foreground (Ctrl-C stops it).
#   bash scripts/serve.sh [qwengw serve options, e.g. --config qwengw.yaml]
# Paths in the options are relative to where you run it, as with `qwengw serve`.
set -euo pipefail
. "$(dirname "$0")/venv.sh"

# Not editable: the installed gateway is the checkout as it is now (run this again after a pull).
"$PY" -m pip install -q --disable-pip-version-check "$_ROOT"
exec "$BIN/qwengw" serve "$@"
