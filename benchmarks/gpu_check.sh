#!/usr/bin/env bash
# The GPU check, a few minutes on a GPU machine (docs/benchmarks.md, "GPU check"): the CUDA tests,
# then benchmarks/gpu_check.py (frames/s of none, clustering and tca on Swin-T and Swin-L sized
# configs at 480x640 in float16, several videos per pass, interleaved; the actor's loop without Ray
# with GPU utilisation from nvidia-smi). Results and logs go to $OUT (default out/gpu-check).
#
# Made for a machine with PyTorch (CUDA), transformers and OpenCV but not this project's pins, no Ray,
# PyAV or pycocotools, and no package registry. What tca_core needs beyond that travels as wheels in
# benchmarks/wheels/ (`make gpu-wheels` downloads them on a machine with a registry) and is installed
# into a throwaway directory; what cannot run is said and skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SITE=$(mktemp -d)
if compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" benchmarks/wheels/*.whl \
    || echo "gpu_check: installing benchmarks/wheels failed; using what is installed"
else
  echo "gpu_check: no benchmarks/wheels (make gpu-wheels); using what is installed"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
else
  echo "gpu_check: no nvidia-smi: GPU utilisation is not sampled"
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" \
  | tee "$OUT/versions.txt"

echo "== CUDA tests (tests/test_cuda.py)"
if "$PY" -c "import pytest" 2>/dev/null; then
  "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.txt"
else
  echo "gpu_check: skipped the CUDA tests: no pytest"
fi

echo "== throughput and the actor's loop (benchmarks/gpu_check.py)"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS: extra options, e.g. a smaller --size for a smoke run
"$PY" -m benchmarks.gpu_check --out "$OUT" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/gpu-check.txt"
