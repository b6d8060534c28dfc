#!/bin/sh
# Run the lab tests and the notebooks as an ordinary user, through the rootless tier.
# Needs root (to create the user). The user gets a readable copy of the tree outside
# root's home and its own venv made with Debian's python3 (pyenv's lives in /root).
set -eu
cd "$(dirname "$0")/.."
USER_NAME=${KUBENET_TEST_USER:-kubenet-test}
id "$USER_NAME" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$USER_NAME"
COPY=/tmp/kubenet-rootless-tree
rm -rf "$COPY"
mkdir -p "$COPY"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$COPY"
chown -R "$USER_NAME": "$COPY"
# A shared cache makes the user's pip install quick on later runs.
su "$USER_NAME" -s /bin/sh -c "
  set -eu
  cd '$COPY'
  /usr/bin/python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/kubenet doctor | head -1
  .venv/bin/python -m pytest tests/lab $(ls notebooks/*.ipynb 2>/dev/null | tr "\n" " ") $*
"
