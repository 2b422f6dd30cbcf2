#!/usr/bin/env bash
# The GPU proof of issue 14, in one run of at most 8 minutes (the sum of the time limits below):
#   1. the tests that need CUDA (the ones marked skipif(not torch.cuda.is_available()));
#   2. benchmarks/image_scale.py --device cuda --bf16 --compile (if that benchmark is there);
#   3. with 2 GPUs or more: fit on 2 processes under torchrun (NCCL), and 1 vs 2 GPUs side by side.
# Every table goes to the file given as $1 (and to the terminal). Without a GPU it says so, runs the
# CUDA tests anyway (they report themselves skipped), a short image_scale on the CPU, and the
# 2-process run on the CPU with gloo, so the script itself is proven.
#
#     benchmarks/gpu_check.sh gpu_check.txt
set -u
out=${1:?usage: benchmarks/gpu_check.sh OUT_FILE}
out=$(realpath -m "$out")
cd "$(dirname "$0")/.." || exit 1
: > "$out"
say() { echo "$*" | tee -a "$out"; }
run() {  # run LIMIT_SECONDS CMD...: the command's output into the file, its status noted
    local limit=$1; shift
    say "\$ $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$out"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 124 ] && say "(stopped after ${limit}s)"
    say "(exit status $rc)"
    say ""
}

say "# pyro_dgm GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null)"
gpus=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
python -c "
import torch
print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPUs:', torch.cuda.device_count() if torch.cuda.is_available() else 0)
for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
    print(' ', i, torch.cuda.get_device_name(i))
" 2>&1 | tee -a "$out"
if [ "$gpus" = 0 ]; then
    say "No CUDA device here: the CUDA tests will report themselves skipped and the benchmarks run on the CPU, short."
    device=cpu
else
    device=cuda
fi
say ""

say "## 1. Tests that need CUDA"
tests=$(python - <<'PY'
import ast, pathlib
for path in sorted(pathlib.Path("tests").glob("test_*.py")):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and any(
                "not torch.cuda.is_available()" in ast.unparse(d) for d in node.decorator_list):
            print(f"{path}::{node.name}")
PY
)
# shellcheck disable=SC2086
run 220 python -m pytest -n 0 -q -rs -p no:cacheprovider $tests

say "## 2. Image models at real sizes"
if [ -f benchmarks/image_scale.py ]; then
    if [ "$device" = cuda ]; then
        run 150 python benchmarks/image_scale.py --device cuda --bf16 --compile
    else
        run 150 python benchmarks/image_scale.py --device cpu --steps 2 --models glow
    fi
else
    say "benchmarks/image_scale.py is not there: skipped"
    say ""
fi

say "## 3. Two processes"
if [ "$gpus" -ge 2 ]; then
    run 50 python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_scaling.py \
        --device cuda --batch 1024 --steps 50
    run 60 python benchmarks/ddp_scaling.py --device cuda --batch 1024 --steps 50 --rounds 1
else
    say "$gpus GPU(s): no 2-GPU run; 2 CPU processes with gloo under torchrun instead"
    run 60 python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_scaling.py \
        --device cpu --batch 64 --steps 5
fi
say "Done, $(date -u '+%H:%M UTC'); tables in $out"
