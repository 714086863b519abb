#!/usr/bin/env bash
# Install everything and run the whole test suite: lint, types, tests. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "sandbox,dev"
bash scripts/setup-agents.sh  # the real agent framework for tests/test_real_agent.py, in its own venv
echo "== ruff" && .venv/bin/ruff check kiosk kiosk_sandbox tests bench agents && .venv/bin/ruff format --check kiosk kiosk_sandbox tests bench agents
echo "== mypy (strict)" && .venv/bin/mypy kiosk kiosk_sandbox
echo "== pytest"
# pytest exits 5 when it collected no test: that is a failure here too.
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
