#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see benchmarks/RESULTS.md): the machine's
# versions, the accelerator-relevant tests on the GPU (dropping -x so one failure does not hide the rest), then the GPU benchmarks, which
# write RESULTS-gpu.md after each benchmark. Everything lands in $OUT (default
# /tmp/ecliptic-gpu); copy RESULTS-gpu.md into benchmarks/ and run `make bench` on a
# machine without a GPU to fold it into RESULTS.md.
#
# Run from the repository root with the machine's own Python (jax with CUDA, equinox,
# flax, optax): bash benchmarks/on_gpu.sh [test-seconds] [bench-seconds]
set -u
OUT=${OUT:-/tmp/ecliptic-gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$PY" -c 'import jax, equinox, flax, optax, sys; print(sys.version.split()[0], "jax", jax.__version__, "equinox", equinox.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
} 2>&1 | tee "$OUT/machine.txt"

# The tests where a GPU changes something: attention kernels, layers' numerics against
# the float64 / PyTorch references (at full float32 precision), transformations.
# Several test processes share the GPU, so none may take most of its memory up front.
ECLIPTIC_TEST_ACCELERATOR=1 JAX_DEFAULT_MATMUL_PRECISION=highest \
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${1:-120}" \
    "$PY" -m pytest -q -p no:cacheprovider -n 8 \
    tests/test_nn_attention_paths.py tests/test_nn_attention.py tests/test_nn_linear.py \
    tests/test_nn_conv.py tests/test_nn_rnn.py tests/test_nn_normalisation.py \
    tests/test_nn_stacked.py tests/test_mixed_precision.py \
    > "$OUT/tests.txt" 2>&1
tail -n 15 "$OUT/tests.txt"

timeout "${2:-360}" "$PY" benchmarks/run_all.py --results "$OUT/RESULTS-gpu.md" 2>&1 \
    | tee "$OUT/bench.log" | grep -v '^|'
