#!/bin/sh
# kubenet set-up: system packages, a virtual environment, then the course in JupyterLab.
#   ./setup.sh              install what is missing and open JupyterLab
#   ./setup.sh --no-launch  install only (also the behaviour when CI=true)
set -eu
cd "$(dirname "$0")"

APT_PACKAGES="python3 python3-venv iproute2 iptables nftables graphviz netcat-openbsd conntrack procps util-linux iputils-ping nfacct chromium wrk iperf3 nginx"
launch=yes
for arg in "$@"; do
  case "$arg" in
    --no-launch) launch=no ;;
    *) echo "usage: ./setup.sh [--no-launch]" >&2; exit 2 ;;
  esac
done
[ "${CI:-}" = "true" ] && launch=no

missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # nginx is only a program the benchmark runs inside a lab's pods: keep Debian from
    # starting (and enabling) it as this machine's web server while it is installed.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    fi
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    [ -n "$policy" ] && rm -f "$policy"
    case " $missing " in
      *" nginx "*) command -v systemctl >/dev/null && systemctl disable nginx >/dev/null 2>&1 || true ;;
    esac
  else
    echo "setup: these system packages are missing. Ask an administrator to run:" >&2
    echo "  sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

# Debian's own python3: every user can run it (a pyenv python in root's home is not).
PY=/usr/bin/python3
VENV=${KUBENET_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
echo "setup: done. Try: $VENV/bin/kubenet doctor"

if [ "$launch" = yes ]; then
  exec "$VENV/bin/jupyter" lab notebooks/00-start-here.ipynb
fi
