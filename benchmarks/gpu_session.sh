#!/usr/bin/env bash
# The GPU benchmarks of benchmarks/ on one NVIDIA machine:
#   (a) mjx_throughput.py: MJX env steps/s vs batch 1..4096 for the warp and jax impls (the four
#       tasks and the stitched sequence, compile apart), the per-lane contact / constraint-row
#       peaks that size naconmax / njmax, and the real metaworld on CPU in the same run;
#   (b) sac_updates.py: SAC updates/s vs vmapped runs 1..1024 on the GPU;
#   (c) robotic_sequence_throughput.py: the study loop with the Meta-World physics on the
#       machine's CPU cores (one worker per core) and the updates on the GPU;
#   (d) ppo_runs.py: PPO agent steps/s on key-door rooms (env + PPO + KS/BC/EWC in one program)
#       vs vmapped runs 1..1024, with a per-run Python loop of the same chunk as the baseline.
# Each writes <benchmark>_<device kind>.json into the output directory, next to a log.
#
#   bash benchmarks/gpu_session.sh MODE [OUT_DIR]
#
#   all     check, then (a), (b), (c)
#   mjx     check, then (a)
#   agent   (b), (c) and (d)
#   check   GPU, library versions, imports, one Warp kernel on cuda:0; measures nothing
#
# Needs an NVIDIA GPU with its driver and a Python holding JAX for CUDA plus this package's
# metaworld and mjx extras and the MJX port of Meta-World (docs/versions.md, docs/mjx_backend.md):
#
#   pip install "jax[cuda12]" -e ".[metaworld,mjx]" && pip install --no-deps mtcworldmjx==0.4.0
#
# Settings (environment):
#   OUT      output directory, as OUT_DIR (default runs/gpu_benchmarks in the repository)
#   PY       the Python (default python3)
#   TIME_S   wall-clock budget of the whole command in seconds (default 3600): each stage is cut
#            at what is left, and (a) gets a --budget-s that ends it in time
#   MJX_ARGS, SAC_ARGS, RS_ARGS, PPO_ARGS   extra arguments of (a)-(d), appended (they override
#            this script's); e.g. MJX_ARGS="--resume" measures only what an earlier (a) JSON in
#            OUT lacks
# Record a run by copying the JSONs into benchmarks/results/.
#
# Without network on the GPU machine: benchmarks/make_wheelhouse.sh (on a machine with network)
# packs the packages the GPU machine lacks into wheelhouse/part1 and wheelhouse/part2, two
# transfers of bounded size. On the GPU machine `unpack` extracts part1 into SITE (default
# wheelhouse/installed) and `install` then adds part2's half of warp.so (separate commands, so
# the parts may arrive one at a time); every mode puts an installed SITE on PYTHONPATH. Each part
# is checked against its MANIFEST's sha256s. WHEELHOUSE (default wheelhouse) is where the parts
# are read from.
set -uo pipefail

SELF=$(realpath "$0")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
MODE=${1:-}
PY=${PY:-python3}
OUT=$(realpath -m "${2:-${OUT:-$ROOT/runs/gpu_benchmarks}}")
WH=$(realpath -m "${WHEELHOUSE:-$ROOT/wheelhouse}")
SITE=$(realpath -m "${SITE:-$WH/installed}")
TIME_S=${TIME_S:-3600}
cd "$ROOT"
END=$((SECONDS + TIME_S))

usage() {
  sed -n '2,/^set -uo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "$MODE" in
  all | mjx | agent | check | unpack | install) ;;
  *)
    usage
    exit 2
    ;;
esac

mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_session_$MODE.log") 2>&1

[ -f "$SITE/.base" ] && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # MuJoCo Warp and worker processes share the GPU

say() { echo "[gpu_session $(date -u +%T) ${SECONDS}s] $*"; }
left() { echo $((END - SECONDS)); }

same() { [ "$(cat "$1")" = "$(cat "$2")" ]; }
expected_sha() { awk -v n="$1" '$1 == "sha256" && $2 == n { print $3 }' "$2"; }

verify() { # FILE NAME MANIFEST
  local want got
  want=$(expected_sha "$2" "$3")
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    say "sha256 of $1 is $got, MANIFEST wants '${want}'"
    return 1
  fi
}

unpack_part1() {
  local m=$WH/part1/MANIFEST
  if [ -f "$SITE/.base" ] && [ ! -f "$m" ]; then return 0; fi # unpacked before
  if [ -f "$SITE/.base" ] && same "$m" "$SITE/.base"; then return 0; fi
  [ -f "$m" ] || { say "no $m: build it with benchmarks/make_wheelhouse.sh"; return 1; }
  verify "$WH/part1/base.tar.xz" part1/base.tar.xz "$m" || return 1
  verify "$WH/part1/warp.so.xz.00" part1/warp.so.xz.00 "$m" || return 1
  rm -rf "$SITE" && mkdir -p "$SITE/.parts"
  "$PY" - "$WH/part1/base.tar.xz" "$SITE" <<'EOF' || return 1
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as t:
    t.extractall(sys.argv[2], filter="tar")
EOF
  cp "$WH/part1/warp.so.xz.00" "$SITE/.parts/"
  cp "$m" "$SITE/.base"
  say "part1 unpacked into $SITE ($(du -sh "$SITE" | cut -f1))"
}

install_part2() {
  local m=$SITE/.base so=$SITE/warp/bin/warp.so
  if [ ! -f "$m" ]; then
    say "part1 is not unpacked into $SITE: run unpack first"
    return 1
  fi
  if [ -f "$so" ] && verify "$so" warp/bin/warp.so "$m" >/dev/null; then return 0; fi
  [ -f "$WH/part2/warp.so.xz.01" ] || { say "no $WH/part2 (benchmarks/make_wheelhouse.sh)"; return 1; }
  same "$WH/part2/MANIFEST" "$m" || { say "part1 and part2 come from different builds"; return 1; }
  verify "$WH/part2/warp.so.xz.01" part2/warp.so.xz.01 "$m" || return 1
  mkdir -p "$(dirname "$so")"
  "$PY" - "$so" "$SITE/.parts/warp.so.xz.00" "$WH/part2/warp.so.xz.01" <<'EOF' || return 1
import lzma, sys
dec = lzma.LZMADecompressor()
with open(sys.argv[1], "wb") as out:
    for part in sys.argv[2:]:
        with open(part, "rb") as f:
            while chunk := f.read(1 << 22):
                out.write(dec.decompress(chunk))
EOF
  verify "$so" warp/bin/warp.so "$m" || return 1
  say "warp.so assembled"
}

check() {
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv 2>&1 | head -3
  local script
  script=$(mktemp --suffix=.py) # a file: Warp reads a kernel's source with inspect
  cat >"$script" <<'EOF'
import importlib, importlib.metadata as md, os
import jax
print("python", os.sys.version.split()[0], "| jax", jax.__version__, jax.devices())
for dist in ("jaxlib", "flax", "optax", "numpy", "mujoco", "mujoco-mjx", "mujoco-warp",
             "warp-lang", "metaworld", "mtcworldmjx", "gymnasium"):
    try:
        print(f"  {dist:12s} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"  {dist:12s} MISSING")
for mod in ("mujoco", "metaworld", "fpc_jax.envs.metaworld_cpu", "warp", "mujoco.mjx",
            "MTCWorldMJX"):
    try:
        importlib.import_module(mod)
        print(f"  import {mod}: ok")
    except Exception as e:
        print(f"  import {mod}: {type(e).__name__}: {e}")
try:  # a Warp kernel on the GPU (NVRTC and the driver agree)
    import warp as wp

    @wp.kernel
    def twice(x: wp.array(dtype=float)):
        i = wp.tid()
        x[i] = 2.0 * x[i]

    x = wp.array([1.0, 2.0], dtype=float, device="cuda:0")
    wp.launch(twice, dim=2, inputs=[x], device="cuda:0")
    print("  warp kernel on cuda:0:", x.numpy())
except Exception as e:
    print(f"  warp kernel on cuda:0: {type(e).__name__}: {e}")
EOF
  "$PY" "$script"
  rm -f "$script"
}

slug() {
  "$PY" -c 'import re, jax
print(re.sub(r"[^a-z0-9]+", "-", jax.devices()[0].device_kind.lower()).strip("-"))'
}

stage() { # NAME SECONDS CMD...: run under a time limit that ends before the budget
  local name=$1 limit=$2
  shift 2
  [ "$limit" -gt "$(($(left) - 10))" ] && limit=$(($(left) - 10))
  if [ "$limit" -lt 30 ]; then
    say "$name: skipped, ${limit}s left"
    return 1
  fi
  say "$name: up to ${limit}s: $*"
  timeout -k 10 "$limit" "$@"
  local rc=$?
  say "$name: exit $rc"
  return $rc
}

run_mjx() {
  local t
  t=$(($(left) - 20))
  if [ "$t" -lt 180 ]; then
    say "mjx_throughput: skipped, ${t}s left"
    return 1
  fi
  # --budget-s: the last measurement starts ~2 minutes before the time limit
  # shellcheck disable=SC2086
  stage mjx_throughput "$t" "$PY" benchmarks/mjx_throughput.py \
    --out "$OUT/mjx_throughput_$(slug).json" --budget-s $((t - 120)) ${MJX_ARGS:-}
}

run_agent() {
  local kind w
  kind=$(slug)
  # shellcheck disable=SC2086
  stage sac_updates 200 "$PY" benchmarks/sac_updates.py --runs 1,8,64,256,1024 \
    --budget-s 150 --out "$OUT/sac_updates_$kind.json" ${SAC_ARGS:-}
  w=$(nproc)
  # HostLoop needs runs x envs_per_run >= workers
  # shellcheck disable=SC2086
  stage robotic_sequence_throughput 330 "$PY" benchmarks/robotic_sequence_throughput.py \
    --runs "$w,$((4 * w))" --workers "$w" --bursts 2 --baseline-procs "$w" \
    --out "$OUT/robotic_sequence_$kind.json" ${RS_ARGS:-}
  # shellcheck disable=SC2086
  stage ppo_runs 400 "$PY" benchmarks/ppo_runs.py --runs 1,16,128,1024 --loop-runs 1,16 \
    --out "$OUT/ppo_runs_$kind.json" ${PPO_ARGS:-}
}

case "$MODE" in
  all) check && { run_mjx; run_agent; } ;;
  mjx) check && run_mjx ;;
  agent) run_agent ;;
  check) check ;;
  unpack) unpack_part1 ;;
  install) install_part2 ;;
esac
rc=$?
say "done (exit $rc); in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $rc
