#!/usr/bin/env bash
# The GPU checks of the speed work in one go, for a machine lent for a few minutes:
#   1. the CUDA tests (pytest -m cuda);
#   2. bench/vae_overhead.py on the GPU: plain PyTorch, pyro_lvm (recorded, eager) and both
#      compiled with CUDA graphs (reduce-overhead), interleaved, standard and overhead-bound;
#   3. `pyro-lvm train vae` on the GPU, without and with --compile reduce-overhead (steps/s, NLL);
#   4. the data-parallel check on the CPU: 1 process against torchrun with 2, one thread each,
#      and bench/ddp_step.py's split of a step (one all-reduce after the backward pass,
#      buckets overlapped with it, torch's DistributedDataParallel on plain PyTorch);
#   5. other models on the GPU: the VQ-VAE's step recorded against eager
#      (bench/recorded_vs_eager.py), the sentence models against plain PyTorch
#      (bench/text_vae_speed.py; needs DATA_DIR/ptb).
# Each part has its own time limit, and a failing part does not stop the next; logs go to OUT.
#
#   bash bench/device_check.sh DATA_DIR OUT_DIR
#   PARTS="tests ddp" bash bench/device_check.sh DATA_DIR OUT_DIR   # some parts only
#
# Where pyro-ppl is not installed, its wheels in .whl/ are installed into /tmp/site first.
set -u
DATA=$(realpath "${1:-../shared/data}")
OUT=${2:-/tmp/device_check}
mkdir -p "$OUT"
RUNS=$(mktemp -d)
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYRO_LVM_DATA="$DATA"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pyro" 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, pyro, pyro_lvm; print('torch', torch.__version__, 'pyro', pyro.__version__, \
'cpus', torch.get_num_threads(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

PARTS=${PARTS:-tests bench cli ddp models}
section() { echo; echo "=== $1 ($(date +%T))"; }
want() { [[ " $PARTS " == *" $1 "* ]]; }

if want tests; then
section "1. CUDA tests"
timeout "${T_TESTS:-150}" python3 -m pytest -m cuda -q -n "${WORKERS:-8}" -W "error::RuntimeWarning:pyro_lvm.traced" \
    2>&1 | tee "$OUT/cuda_tests.log" | tail -25
fi

if want bench; then
section "2. bench/vae_overhead.py on the GPU"
timeout "${T_BENCH:-220}" python3 bench/vae_overhead.py --data-dir "$DATA" --device cuda --configs standard,overhead \
    --objectives elbo,iwae5 --compile --compile-mode reduce-overhead --repeats "${REPEATS:-5}" 2>&1 | tee "$OUT/bench.log"
fi

if want cli; then
section "3. pyro-lvm train vae on the GPU"
for flags in "" "--compile reduce-overhead"; do
    name=gpu${flags:+_compiled}
    timeout 60 python3 -m pyro_lvm train vae --dataset binarized_mnist --data-dir "$DATA" --epochs 2 --batch-size 100 \
        --eval-particles 100 --no-progress --no-figures --device cuda $flags --out "$RUNS/$name" \
        > "$OUT/cli_$name.log" 2>&1 || { echo "$name failed:"; tail -5 "$OUT/cli_$name.log"; }
done
fi

if want ddp; then
section "4. data parallel on the CPU, one thread per process"
export OMP_NUM_THREADS=1
for mode in "" --torch-ddp; do
    timeout 60 python3 bench/ddp_step.py --data-dir "$DATA" $mode 2>&1 | grep rank
done
for mode in "" --overlap --torch-ddp; do
    timeout 60 torchrun --standalone --nproc_per_node 2 bench/ddp_step.py --data-dir "$DATA" $mode 2>&1 | grep "rank 0"
done
timeout 70 python3 -m pyro_lvm train vae --dataset binarized_mnist --data-dir "$DATA" --epochs 2 --batch-size 100 \
    --eval-particles 100 --no-progress --no-figures --out "$RUNS/cpu1" > "$OUT/cli_cpu1.log" 2>&1 \
    || { echo "cpu1 failed:"; tail -5 "$OUT/cli_cpu1.log"; }
timeout 70 torchrun --standalone --nproc_per_node 2 -m pyro_lvm train vae --dataset binarized_mnist --data-dir "$DATA" \
    --epochs 2 --batch-size 100 --eval-particles 100 --no-progress --no-figures --out "$RUNS/cpu2" \
    > "$OUT/cli_cpu2.log" 2>&1 || { echo "cpu2 failed:"; tail -5 "$OUT/cli_cpu2.log"; }
fi

if want models; then
section "5. other models on the GPU"
timeout "${T_MODELS:-150}" python3 bench/recorded_vs_eager.py --data-dir "$DATA" --device cuda --model vqvae \
    --option likelihood=bernoulli 2>&1 | tee "$OUT/vqvae.log" | tail -2
timeout "${T_MODELS:-150}" python3 bench/text_vae_speed.py --data-dir "$DATA" --device cuda --repeats 3 2>&1 \
    | tee "$OUT/text.log" | tail -6
fi

want cli || want ddp || exit 0
section "summary of the runs (train_steps / train_seconds, test NLL with 100 particles)"
python3 - "$RUNS" <<'EOF' | tee "$OUT/runs.txt"
import json, sys
from pathlib import Path

for name in ("gpu", "gpu_compiled", "cpu1", "cpu2"):
    path = Path(sys.argv[1]) / name / "metrics.json"
    if not path.is_file():
        print(f"{name:14s} no metrics.json")
        continue
    m = json.loads(path.read_text())
    print(f"{name:14s} steps {m['train_steps']:5d}  {m['train_steps'] / m['train_seconds']:8.1f} steps/s  "
          f"test NLL {m['test_nll']:.2f}")
EOF
