#!/usr/bin/env bash
# The one check command, the same locally and in CI: lint, types, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src tests bench
ruff format --check src tests bench
echo "== mypy"
mypy
echo "== pytest"
set +e
pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure for Socle" >&2
  exit 1
fi
exit $code
