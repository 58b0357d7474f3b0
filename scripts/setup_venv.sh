#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install nnunet-polycl into it.
# Usage: source scripts/setup_venv.sh [EXTRAS]   (EXTRAS e.g. "test"; VENV=path overrides the default ./.venv;
# VENV_OPTIONS e.g. --system-site-packages are passed to "python -m venv" when the environment is created)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    # shellcheck disable=SC2086
    "$PYTHON" -m venv ${VENV_OPTIONS:-} "$VENV"
fi
SPEC="$REPO"
[ -n "$EXTRAS" ] && SPEC="$REPO[$EXTRAS]"
echo "[setup] installing $SPEC (editable) into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$SPEC"
# Make nnUNetv2_train / nnUNetv2_predict find the PolyCL trainers in every shell that activates this venv.
"$VENV/bin/polycl_env" --activate-hook "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
