#!/usr/bin/env bash
# Headless Chromium and its WebDriver from the OS packages, for tests/integration/test_playground.py.
# Idempotent: does nothing (and needs no network) when both are installed.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "chromium and chromedriver present: $(chromedriver --version | head -1)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install chromium and chromium-driver (needs root or sudo)" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
chromedriver --version
