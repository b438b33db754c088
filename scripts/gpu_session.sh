#!/usr/bin/env bash
# The device-side entry of a GPU lease (see scripts/gpu_session.py for the preparation here).
# Arguments go to gpu_session.py, e.g. --budget 560 --resume .device/returned
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .device/setup.sh ] && source .device/setup.sh
export WSBENCH_DATA_DIR=${WSBENCH_DATA_DIR:-$PWD/.device/data}
export PYTHONUNBUFFERED=1
exec python3 scripts/gpu_session.py "$@"
