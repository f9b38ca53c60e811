#!/usr/bin/env bash
# servesim's own GPU profiles in one call (issue 15, item 9), for whoever has a GPU:
# ResNet-50 and BERT-base (4 stages, as the H100 yardstick cuts it) with exits, fp16,
# eager, measured by the project's profilers on the device:
#
#   * the kernel profile (python -m servesim.workloads.profiler_torch): every stage and ramp head
#     at batch sizes 1-16, CUDA events, host enqueue time in the metadata, the whole
#     backbone as <model>_e2e;
#   * the served profile (python -m servesim.experiments.profile_served): the model as the real
#     executor serves it, its host rows (batch, exit, leave, final, turnaround, total),
#     where a head holds the synchronisation and copy that reading a ramp needs and
#     leave the gather of the rows that go on;
#
# each with its raw-samples sidecar, packed with the machine's description into
# $OUT/gpu_profiles.tgz (the device tool brings back at most 8 files). About 6 minutes
# on an H100. CUDA graphs are not measured yet (the profilers run eager only).
#
# The GPU image has torch but not simpy, which the served profile imports: carry it as
# a wheel. From the repository root, here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl simpy==4.1.2
# then run `bash bench/gpu.sh` on the device with .whl carried. To try the script on a
# CPU first, small and quick:
#   DEVICE=cpu DTYPE=fp32 QUICK=1 OUT=/tmp/gpu PYTHON=.venv/bin/python bash bench/gpu.sh
set -euo pipefail

DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-fp16}
QUICK=${QUICK:-0}
OUT=${OUT:-runs/gpu}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/servesim-site .whl/*.whl
    export PYTHONPATH=/tmp/servesim-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

if [ "$QUICK" = 1 ]; then  # a smoke run: tiny inputs, two sizes, a few calls
    SIZES=1,2; REPEATS=3; MAX_S=1; SERVED_SIZES=1,2; SERVED_REPEATS=2; IMAGE=(--input-size 32); TEXT=(--input-size 16)
else
    SIZES=$(seq -s, 1 16); REPEATS=50; MAX_S=3; SERVED_SIZES=1,2,4,8,12,16; SERVED_REPEATS=30; IMAGE=(); TEXT=()
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    "$PYTHON" -c "import platform, torch; print('python', platform.python_version(), '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
        --format=csv || true
    echo "bench/gpu.sh DEVICE=$DEVICE DTYPE=$DTYPE QUICK=$QUICK"
} > "$work/env.txt"

for model in resnet50_ee bert4_ee; do
    if [ "$model" = bert4_ee ]; then size=("${TEXT[@]}"); else size=("${IMAGE[@]}"); fi
    tag="${DEVICE%%:*}_${model}_${DTYPE}"
    echo "== $model: kernel profile"
    "$PYTHON" -m servesim.workloads.profiler_torch --model "$model" --device "$DEVICE" --dtype "$DTYPE" \
        --batch-sizes "$SIZES" --repeats "$REPEATS" --max-seconds-per-point "$MAX_S" "${size[@]}" \
        --out "$work/${tag}_eager.csv"
    echo "== $model: served profile"
    "$PYTHON" -m servesim.experiments.profile_served --model "$model" --device "$DEVICE" --dtype "$DTYPE" \
        --batch-sizes "$SERVED_SIZES" --repeats "$SERVED_REPEATS" "${size[@]}" \
        --out "$work/${tag}_eager_served.csv"
done

mkdir -p "$OUT"
tar czf "$OUT/gpu_profiles.tgz" -C "$work" .
cp "$work/env.txt" "$OUT/env.txt"
echo "wrote $OUT/gpu_profiles.tgz:"
tar tzf "$OUT/gpu_profiles.tgz"
