#!/usr/bin/env bash
# The SMAC full presets that do not fit a 2-core CPU, on the lent GPU machine (16 cores, one
# H200): smac-mountaincar full (5 seeds x 50k steps, SAC and SMAC: 10 runs, on the CPU, one
# process and one thread each) and smac-halfcheetah full (3 seeds x 100k steps: 6 runs, on
# the GPU when the calibration below finds it faster than one CPU thread), side by side.
#
#   bash benchmarks/device_smac_full.sh part1 [KEY=VALUE ...]   # one command, ~9.5 min
#   bash benchmarks/device_smac_full.sh part2                   # at once after, same machine
#
# part1 calibrates (~10 s: ms per update of SAC / SMAC K=8 at 256 units, batch 256, on one
# CPU thread and on the GPU), then starts both experiments for BUDGET_S seconds (default 520).
# Every run checkpoints (MountainCar every 5k steps, HalfCheetah every 2.5k) into $RUNS, which
# git ignores, so a warm machine keeps it; a run not finished is then killed. part2 resumes the
# unfinished experiments from those checkpoints for BUDGET_S seconds (default 150): it must be
# called within the machine's 30 s of warmth (a released machine loses its disk, and the
# HalfCheetah checkpoints, ~20 MB a run, are too big to come back through $OUT and be carried).
# Each part packs every finished experiment's run directory (records, report, figures, the
# trained actors; not the train_*.pt checkpoints) into $OUT/<name>.tar.gz, and writes
# $OUT/calib.json (part1), $OUT/progress.txt (the step each run has reached) and $OUT/log.txt.
#
# KEY=VALUE arguments of part1 are --set overrides for both experiments (a smoke test:
# `... part1 seeds=1 steps=300 learning_starts=100 hidden=16 head_hidden=8 batch_size=16
# eval_every=300 eval_episodes=1`). Environment: PYTHON (default python3), OUT, RUNS
# (default runs/device), BUDGET_S, MC_JOBS (10), HC_JOBS (6), HC_DEVICE (auto | cpu | cuda),
# EXPERIMENTS (default "mountaincar halfcheetah"; one of them alone also works).
# The device machine has no gymnasium or MuJoCo: carry them as wheels in .whl (see
# docs/rl.md, "Full presets on the GPU machine"); they are installed into /tmp/site here.
set -uo pipefail
PART=${1:?usage: device_smac_full.sh part1|part2 [KEY=VALUE ...]}
shift
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/smac-device-out}
RUNS=${RUNS:-runs/device}
MC_JOBS=${MC_JOBS:-10}
HC_JOBS=${HC_JOBS:-6}
EXPERIMENTS=${EXPERIMENTS:-mountaincar halfcheetah}
mkdir -p "$OUT" "$RUNS"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MUJOCO_GL=egl
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$PY" -c "import gymnasium as g; g.make('MountainCarContinuous-v0'); g.make('HalfCheetah-v5')" \
  || { echo "gymnasium / MuJoCo missing: carry their wheels in .whl (docs/rl.md)"; exit 1; }
echo "== $PART at $(date -u +%T); $(nproc) cores here; $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")')"

progress() {  # the step each run's checkpoint holds
  "$PY" - "$RUNS" > "$OUT/progress.txt" <<'EOF'
import pathlib, sys
from flowfields.engine import load_checkpoint
for p in sorted(pathlib.Path(sys.argv[1]).glob("*/train_*.pt")):
    if not p.name.endswith(".prev.pt"):
        print(p.parent.name, p.stem[6:], load_checkpoint(p)["step"])
EOF
  cat "$OUT/progress.txt"
}

finished() {  # finished <run dir>: its run.json says so
  "$PY" -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['status'] != 'finished')" \
    "$1/run.json" 2> /dev/null
}

pack() {
  for name in $EXPERIMENTS; do
    if finished "$RUNS/$name"; then
      tar -czf "$OUT/$name.tar.gz" -C "$RUNS" --exclude='train_*.pt' "$name"
      echo "$name: finished, packed into $OUT/$name.tar.gz"
      "$PY" -c "import json,sys; [print(' ', c['id'], c['holds'], c['measured']) for c in json.load(open(sys.argv[1]))['claims']]" "$RUNS/$name/metrics.json"
    else
      echo "$name: not finished"
    fi
  done
}

calibrate() {  # ms per update, SAC and SMAC K=8, 256 units, batch 256, on cpu and cuda
  "$PY" - > "$OUT/calib.json" <<'EOF'
import json, time, torch
from flowfields.rl import SAC, SMAC, AgentConfig, Batch
torch.set_num_threads(1)
out = {}
for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for env, (o, a) in {"mountaincar": (2, 1), "halfcheetah": (17, 6)}.items():
        batch = Batch(torch.randn(256, o, device=dev), torch.rand(256, a, device=dev) * 2 - 1,
                      torch.randn(256, device=dev), torch.randn(256, o, device=dev),
                      torch.zeros(256, device=dev))
        for name, cls in (("sac", SAC), ("smac", SMAC)):
            agent = cls(o, a, AgentConfig(hidden=256, n_particles=8), dev)
            state = agent.train_state()
            for _ in range(5):  # warm-up
                agent.update(state, batch)
            sync()
            t0 = time.perf_counter()
            for _ in range(20):
                agent.update(state, batch)
            sync()
            out[f"{env}/{name}/{dev}"] = round(1e3 * (time.perf_counter() - t0) / 20, 2)
print(json.dumps(out, indent=1))
EOF
  cat "$OUT/calib.json"
}

run_exp() {  # run_exp <name> <device> <jobs> <resume: 0|1> [--set values]: in the background
  local name=$1 dev=$2 jobs=$3 resume=$4
  shift 4
  local mode=(--overwrite)
  [ "$resume" = 1 ] && mode=(--resume)
  timeout -s KILL "$BUDGET_S" "$PY" -m flowfields run "smac-$name" --out "$RUNS/$name" \
    "${mode[@]}" --no-progress --device "$dev" --set jobs="$jobs" "$@" \
    > "$OUT/$name.log" 2>&1 &
  PIDS+=($!)
}
PIDS=()

device_and_jobs() {  # device_and_jobs <name>: "device jobs" of that experiment
  if [ "$1" = mountaincar ]; then echo "cpu $MC_JOBS"; else echo "$HC_DEVICE $HC_JOBS"; fi
}

if [ "$PART" = part1 ]; then
  BUDGET_S=${BUDGET_S:-520}
  calibrate
  HC_DEVICE=${HC_DEVICE:-auto}
  if [ "$HC_DEVICE" = auto ]; then
    HC_DEVICE=$("$PY" -c "import json; c=json.load(open('$OUT/calib.json')); g=c.get('halfcheetah/smac/cuda'); print('cuda' if g and g < c['halfcheetah/smac/cpu'] else 'cpu')")
  fi
  echo "$HC_DEVICE" > "$RUNS/hc_device"
  for name in $EXPERIMENTS; do
    read -r dev jobs <<< "$(device_and_jobs "$name")"
    extra=()
    [ "$name" = halfcheetah ] && extra=(checkpoint_every=2500)
    echo "== training $name on $dev (jobs=$jobs) for ${BUDGET_S} s"
    run_exp "$name" "$dev" "$jobs" 0 "${extra[@]}" "$@"
  done
  wait "${PIDS[@]}"
elif [ "$PART" = part2 ]; then
  BUDGET_S=${BUDGET_S:-150}
  HC_DEVICE=$(cat "$RUNS/hc_device" 2> /dev/null || echo cpu)
  for name in $EXPERIMENTS; do
    read -r dev jobs <<< "$(device_and_jobs "$name")"
    if [ -f "$RUNS/$name/run.json" ] && ! finished "$RUNS/$name"; then
      echo "== resuming $name on $dev (jobs=$jobs) for ${BUDGET_S} s"
      run_exp "$name" "$dev" "$jobs" 1
    fi
  done
  [ ${#PIDS[@]} -gt 0 ] && wait "${PIDS[@]}"
else
  echo "unknown part: $PART (expected part1 or part2)"
  exit 2
fi
echo "== done at $(date -u +%T)"
progress
pack
