#!/usr/bin/env bash
# Installs siglip-search into the current Python from nothing. --dev adds the test tools (and
# PostgreSQL's server binaries, for the tests' throwaway server); --cpu takes torch from PyTorch's
# CPU wheel index (see below). A library on a PostgreSQL server needs the `postgres` extra:
# pip install -e ".[postgres]".
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install --disable-pip-version-check -q"
DEV=0
TORCH_FROM=()
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        --cpu) TORCH_FROM=(--index-url https://download.pytorch.org/whl/cpu) ;;
        *) echo "setup: unknown option $arg (options: --dev, --cpu)" >&2; exit 2 ;;
    esac
done
# torch is pinned to 2.13.0. Which build that brings depends on the package index pip uses: from
# plain PyPI on Linux it is the CUDA build (several GB with its NVIDIA libraries), which GPU owners
# want; an index that serves a CPU wheel (this project's CI machines) gives the CPU build (a few
# hundred MB). A CPU-only user gets the small build with --cpu, which is
#   pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    $PIP torch==2.13.0 "${TORCH_FROM[@]}"
fi
if [[ $DEV == 1 ]]; then
    $PIP -e ".[dev,ray]"  # ray: the tests run indexing jobs on a local Ray
    if ! command -v exiftool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        # The export tests check sidecars and DNG files with exiftool, as photographers would.
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libimage-exiftool-perl) >/dev/null \
            || echo "setup: could not install exiftool; the tests that use it will be skipped" >&2
    fi
    if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        # The UI tests drive a real headless browser; browsers cannot be downloaded by pip here.
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
            || echo "setup: could not install chromium; browser tests will be skipped" >&2
    fi
    if ! { command -v initdb || compgen -G "/usr/lib/postgresql/*/bin/initdb"; } >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1; then
        # The store and indexer tests also run on a throwaway PostgreSQL server they start themselves
        # (tests/postgres_server.py) from Debian's server binaries.
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null \
            || echo "setup: could not install postgresql; the PostgreSQL tests will be skipped" >&2
    fi
else
    $PIP -e .
fi
