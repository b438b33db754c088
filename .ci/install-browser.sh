#!/usr/bin/env bash
# Install headless Chromium (Debian package) for the leaderboard page check
# (tests/test_leaderboard_browser.py, scripts/screenshot_leaderboard.py). Idempotent: does
# nothing when a chromium binary is already on PATH. Needs root (or sudo) and apt.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "install-browser: $name already installed ($(command -v "$name"))"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: apt-get not found; install Chromium by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-browser: need root or sudo to apt-get install chromium" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Debian names the package 'chromium'; Ubuntu's 'chromium-browser' is a snap shim, so try Debian's first.
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core \
  || $SUDO apt-get install -y -q chromium-browser
echo "install-browser: installed $(command -v chromium || command -v chromium-browser)"
