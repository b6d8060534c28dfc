#!/bin/sh
# Every test: ruff, unit tests, lab tests and every notebook (nbval), in the venv that
# ./setup.sh made. As root it then runs the lab tests and notebooks again as an ordinary
# user, through the rootless tier (skip with KUBENET_SKIP_ROOTLESS=1).
set -eu
cd "$(dirname "$0")"
VENV=${KUBENET_VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "run ./setup.sh --no-launch first" >&2; exit 2; }

echo "== ruff"
"$VENV/bin/ruff" check kubenet tests bench
echo "== pytest ($(id -un))"
"$VENV/bin/python" -m pytest "$@"

if [ "$(id -u)" = 0 ] && [ "${KUBENET_SKIP_ROOTLESS:-}" != 1 ]; then
  echo "== pytest as an ordinary user (rootless tier)"
  exec tests/rootless.sh "$@"
fi
