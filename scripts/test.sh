#!/usr/bin/env bash
# Install everything the tests need (into .venv) and run the whole suite: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
.venv/bin/ruff check guardian tests bench
.venv/bin/ruff format --check guardian tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
