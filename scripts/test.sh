#!/usr/bin/env bash
# The one check command, the same locally and in CI: lint, layers, types, then the tests.
#   scripts/test.sh            everything (CI runs this)
#   scripts/test.sh --fast     lint + the fast tier (tests/unit), well under a minute
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit/model -k overlay).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [[ "${1:-}" == "--fast" ]]; then fast=1; shift; fi
scripts/install.sh --test
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src tests bench
ruff format --check src tests bench
echo "== import-linter"
lint-imports
if ((fast)); then
  markers=(-m fast)
else
  echo "== mypy"
  mypy
  markers=()
fi
echo "== pytest"
set +e
pytest -q -p no:cacheprovider "${markers[@]}" "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure for Socle" >&2
  exit 1
fi
exit $code
