#!/usr/bin/env bash
# Install Socle into .venv at the repository root, plus the system packages it drives.
# Idempotent: safe to run again. Usage: scripts/install.sh [--test]  (--test adds test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev gcc bubblewrap util-linux iproute2 curl git ca-certificates)
TEST_APT_PACKAGES=(postgresql wrk)

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
if [[ "${1:-}" == "--test" ]]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
echo "socle: installed $(.venv/bin/socle --version) in .venv"
