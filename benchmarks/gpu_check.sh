#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, as one run on an NVIDIA machine (about 5 minutes on
# one H200 with 16 cores): the CUDA tests, then embed_speed.py and index_speed.py with --device
# cuda (ours against transformers' SiglipModel, both fp16, on the same base-sized weights; end to
# end indexing of 12 MP JPEGs against the decode-only rate), then the mode cosines on the GPU.
# Each result is also written to $OUT (default /tmp/gpu-check) as markdown.
#
# Usage, from the repository root:   bash benchmarks/gpu_check.sh
#
# The machine needs this project's Python dependencies. Where some are missing and nothing can be
# fetched (faiss-cpu, SQLAlchemy and defusedxml, on this workplace's GPU image, whose python3 is
# 3.12), download their wheels on a machine that can, into .whl/ (ignored by git), and carry that
# folder; this script installs them first:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     faiss-cpu==1.15.1 sqlalchemy==2.1.9 defusedxml==0.7.1
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export SIGLIP_SEARCH_TEST_GPU=1  # the test suite hides GPUs otherwise

{
    echo "## Machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "$(nproc) CPU cores; $(python3 -c 'import platform, torch; print("Python", platform.python_version(), "torch", torch.__version__, "CUDA", torch.version.cuda)')"
    grep -m1 "model name" /proc/cpuinfo || true
} | tee "$OUT/machine.md"

echo "## CUDA tests" | tee "$OUT/tests.md"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee -a "$OUT/tests.md"

echo "## Model only: ours against transformers, fp16" | tee "$OUT/embed_speed.md"
python3 benchmarks/device_embed_speed.py --device cuda --quick 2>&1 | grep -v "^I0000\|^WARNING" |
    tee -a "$OUT/embed_speed.md"

for pool in threads processes; do
    echo "## Indexing 12 MP JPEGs, decoding in $pool" | tee "$OUT/index_speed_$pool.md"
    python3 benchmarks/device_index_speed.py --device cuda --n 256 --pool "$pool" --no-rss 2>&1 |
        grep -v "^I0000\|^WARNING" | tee -a "$OUT/index_speed_$pool.md"
done

echo "## Mode cosines on the GPU against fp32 on the CPU" | tee "$OUT/mode_cosines.md"
python3 benchmarks/mode_cosines.py --device cuda --base-images 128 2>&1 | grep -v "^I0000\|^WARNING" |
    tee -a "$OUT/mode_cosines.md"
