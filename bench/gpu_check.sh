#!/usr/bin/env bash
# The CUDA check of issue 15, under 5 minutes on one GPU machine, run from the repository root:
#
#     bash bench/gpu_check.sh                      # on the GPU machine; results and log.txt land in $OUT
#     CHECK_DEVICE=cpu QUICK=1 PY=.venv/bin/python bash bench/gpu_check.sh   # a dry run without a GPU
#
# Steps (each under `timeout`, all under one deadline, BUDGET_S seconds; a failed or hung step
# does not stop the ones after it; the exit status says whether every step passed):
#   1. nvidia-smi, python / torch / CUDA versions
#   2. the CUDA-marked tests: pytest -m cuda tests/test_cuda.py
#   3. the contest-scale synthetic set (recsys_kit.synth; the `kit` CLI imports tune, hence optuna)
#   4. bench/contest_scale.py: epochs per torch member at fp32 and auto (bf16) precision, EASE's
#      float64 / float32 solves and their top-10 overlap, a full scoring pass, each vs its reference
#   5. a short contest-scale 5-fold cv on the device (Multi-DAE, then EASE; 2 epochs, one refit on
#      every public row, no leaderboard-estimate fits: tests/test_cuda.py runs those) through run_cv:
#      time to the first epoch, wall, peak RSS, peak GPU memory, OOF Recall@10
# Needs python3 with torch, numpy, scipy, pandas, scikit-learn, pytest; not optuna, typer or rich.
set -uo pipefail

OUT=${OUT:-$(mktemp -d /tmp/gpu-check-XXXXXX)}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
TEE_PID=$!

PY=${PY:-python3}
DEVICE=${CHECK_DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-295}  # every step together; the machine's own start comes on top
# BENCH_ARGS / CV_ARGS: extra flags for steps 4 / 5, e.g. BENCH_ARGS="--members multidae multivae"
if [ -n "${QUICK:-}" ]; then
  SIZES=(3000 1200 150000); QUICK_FLAG=(--quick)
else
  SIZES=(31360 6807 5154471); QUICK_FLAG=()
fi
DATA=${DATA:-/tmp/recsys-kit-synth-${SIZES[0]}x${SIZES[1]}x${SIZES[2]}}
export PYTHONUNBUFFERED=1 PY DEVICE DATA
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DEADLINE=$(( $(date +%s) + BUDGET_S ))
STATUS=()
FAILED=0

# step NAME CAP_SECONDS COMMAND...: runs under min(CAP, time left before the deadline); a COMMAND that
# is one of this file's functions runs in a child bash, so that `timeout` can stop it
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) - 3 ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 5 ]; then
    echo "=== $name: SKIPPED (no time left before the ${BUDGET_S} s deadline)"
    STATUS+=("$name=skipped"); FAILED=1; return
  fi
  echo
  echo "=== $name (limit ${limit} s) $(date +%T)"
  local started=$(date +%s)
  if [ "$(type -t "$1")" = function ]; then
    timeout -k 5 "$limit" bash -c '"$@"' _ "$@"
  else
    timeout -k 5 "$limit" "$@"
  fi
  local rc=$?
  local took=$(( $(date +%s) - started ))
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "=== $name: TIMED OUT after ${took} s"
  echo "=== $name: exit $rc in ${took} s"
  STATUS+=("$name=$rc(${took}s)")
  [ "$rc" -eq 0 ] || FAILED=1
}

env_report() {
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv || true
  fi
  echo "cpus: $(nproc)  python: $($PY -c 'import sys; print(sys.version.split()[0])')"
  "$PY" - "$DEVICE" <<'EOF'
import sys, torch, numpy, scipy, pandas, sklearn
print(f"torch {torch.__version__} (CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"numpy {numpy.__version__}, scipy {scipy.__version__}, pandas {pandas.__version__}, sklearn {sklearn.__version__}")
from importlib.util import find_spec
print("optuna:", "installed" if find_spec("optuna") else "not installed", "(nothing here needs it)")
print(f"cuda available {torch.cuda.is_available()}, devices {torch.cuda.device_count()}, threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
    x = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    print("a 4096^2 matmul on the GPU:", float((x @ x).float().abs().mean()) > 0)
elif sys.argv[1] == "cuda":
    sys.exit("no CUDA device visible to torch")
import recsys_kit.cv, recsys_kit.models  # noqa: F401  (the library imports without optuna)
print("optuna imported by the library:", "optuna" in sys.modules)
EOF
}

make_data() {  # make_data USERS ITEMS INTERACTIONS
  if [ -f "$DATA/train_ratings.csv" ]; then echo "reusing $DATA"; return 0; fi
  "$PY" - "$DATA" "$@" <<'EOF'
import sys, time
from recsys_kit.synth import make_synthetic
started = time.perf_counter()
summary = make_synthetic(sys.argv[1], users=int(sys.argv[2]), items=int(sys.argv[3]), interactions=int(sys.argv[4]), seed=0)
print(f"synth: {summary['users']:,} users x {summary['items']:,} items, {summary['interactions']:,} interactions "
      f"in {time.perf_counter() - started:.1f} s -> {summary['path']}")
EOF
}

export -f env_report make_data
echo "gpu_check: device $DEVICE, data $DATA, out $OUT, budget ${BUDGET_S} s, $(date)"
git log --oneline -1 2>/dev/null || true

step env 40 env_report
step pytest-cuda 90 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs --junitxml="$OUT/pytest-cuda.xml" \
  tests/test_cuda.py
step synth 90 make_data "${SIZES[@]}"
step bench 120 "$PY" bench/contest_scale.py --device "$DEVICE" --data "$DATA" ${QUICK_FLAG[@]+"${QUICK_FLAG[@]}"} --epochs 2 \
  --precisions fp32 auto --sections data ease epochs scoring --out "$OUT/contest_scale-$DEVICE.json" ${BENCH_ARGS:-}
step cv 130 "$PY" bench/contest_scale.py --device "$DEVICE" --data "$DATA" ${QUICK_FLAG[@]+"${QUICK_FLAG[@]}"} --epochs 2 \
  --sections cv --cv-models multidae ease --cv-refit-seeds 1 --no-lb-estimate \
  --out "$OUT/contest_scale-$DEVICE-cv.json" ${CV_ARGS:-}

echo
echo "=== summary: ${STATUS[*]}"
ls -la "$OUT"
exec >&- 2>&-  # let tee write the last lines of log.txt before the machine hands $OUT back
wait "$TEE_PID" 2>/dev/null || sleep 1
exit $FAILED
