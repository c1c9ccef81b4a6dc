#!/usr/bin/env bash
# Install Socle into .venv at the repository root, plus the system packages it drives.
# Idempotent: safe to run again. Usage: scripts/install.sh [--test]  (--test adds test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev gcc bubblewrap util-linux iproute2 procps curl git ca-certificates e2fsprogs libseccomp2 nginx nftables prometheus prometheus-alertmanager)
TEST_APT_PACKAGES=(postgresql wrk pebble dnsutils openssh-server haproxy caddy gnupg strace victoria-metrics jq)

want=("${APT_PACKAGES[@]}")
[[ "${1:-}" == "--test" ]] && want+=("${TEST_APT_PACKAGES[@]}")

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "socle: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Exact versions from the lock files (scripts/lock.sh makes them from pyproject.toml), so a
# new release of a library cannot change what CI or a user runs; then Socle itself.
if [[ "${1:-}" == "--test" ]]; then lock=requirements-test.lock; else lock=requirements.lock; fi
.venv/bin/python -m pip install -q -r "$lock"
.venv/bin/python -m pip install -q --no-deps -e .
echo "socle: installed $(.venv/bin/socle --version) in .venv"
