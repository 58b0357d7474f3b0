#!/usr/bin/env bash
# README command 2: install with the test extra and run the whole test suite (CPU, ~15 minutes on 2 cores).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_venv.sh" test
cd "$REPO"
python -m pytest "$@"
