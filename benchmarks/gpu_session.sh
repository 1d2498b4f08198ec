#!/usr/bin/env bash
# The GPU measurements of benchmarks/ on a lent device machine (/work/.library/device/README.md):
# (a) mjx_throughput.py, (b) sac_updates.py on the GPU, (c) robotic_sequence_throughput.py with
# the physics on the machine's CPU cores; every result JSON and a log land in $OUT.
#
# The packages the device lacks (MuJoCo, MJX, Warp, metaworld, the port) exceed one call's
# 64 MiB carry, so they travel in two parts (benchmarks/make_wheelhouse.sh, run here once) and
# the work takes three `run` calls on ONE machine, in this order:
#
#   1. carry ["wheelhouse/part1"]   command "bash benchmarks/gpu_session.sh stash"   (~1 min)
#      unpacks part1 into $SITE and keeps warp.so's first half on the machine; checks imports.
#   2. carry ["wheelhouse/part2"]   command "bash benchmarks/gpu_session.sh mjx"     (<= 10 min)
#      CALL IT AT ONCE when 1 returns: the machine stays warm only 30 s after a call, and 2 needs
#      what 1 left on it. If 2 says "run stash first", the machine was given back: redo 1, 2.
#      Runs (a), then copies mjx_throughput_<device>.json and the log to $OUT.
#   3. carry ["wheelhouse/part1"]   command "bash benchmarks/gpu_session.sh agent"   (<= 10 min)
#      Runs (b) and (c); needs part1 only, so it also works on a fresh machine. On the machine of
#      call 2 it then spends the time left on what (a)'s budget left out (--resume) and returns
#      the completed mjx_throughput JSON.
#
# Give 2 and 3 timeout_s 600; each stage's time limit is taken from CALL_S (default 585 s).
# About 21 minutes of the session's 30 of device time, machine start included.
#
# Also: `check` (imports and versions only), `unpack` / `install` (what stash / mjx install,
# nothing run), `all` (everything in one command, for a machine with both parts and more time).
# Overrides (env): PY (default python3), SITE (/tmp/fpc_site), OUT (./gpu_out), RESULTS
# (/tmp/fpc_results, where (a) writes), WHEELHOUSE (wheelhouse), SKIP_INSTALL=1 (use PY's own
# packages), CALL_S, and extra arguments for each benchmark in MJX_ARGS, SAC_ARGS, RS_ARGS
# (appended, so they override the defaults below).
# Afterwards, here: copy the JSONs from the calls' files_at into benchmarks/results/.
set -uo pipefail

cd "$(dirname "$0")/.."
MODE=${1:-}
PY=${PY:-python3}
WH=${WHEELHOUSE:-wheelhouse}
SITE=${SITE:-/tmp/fpc_site}
OUT=${OUT:-$PWD/gpu_out}
RESULTS=${RESULTS:-/tmp/fpc_results}
CALL_S=${CALL_S:-585}
END=$((SECONDS + CALL_S))
mkdir -p "$OUT" "$RESULTS"
exec > >(tee -a "$OUT/gpu_session_${MODE:-none}.log") 2>&1

PYTHONPATH=$PWD
[ "${SKIP_INSTALL:-0}" = 1 ] || PYTHONPATH=$SITE:$PYTHONPATH
export PYTHONPATH
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

install_base() {
  [ "${SKIP_INSTALL:-0}" = 1 ] && return 0
  local m=$WH/part1/MANIFEST
  if [ -f "$SITE/.base" ] && [ ! -f "$m" ]; then return 0; fi
  if [ -f "$SITE/.base" ] && same "$m" "$SITE/.base"; then return 0; fi
  [ -f "$m" ] || { say "no $m: carry wheelhouse/part1 (benchmarks/make_wheelhouse.sh)"; return 1; }
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

install_warp() {
  [ "${SKIP_INSTALL:-0}" = 1 ] && return 0
  local m=$SITE/.base so=$SITE/warp/bin/warp.so
  if [ ! -f "$m" ]; then
    say "part1 is not on this machine: run stash first, then mjx at once"
    return 1
  fi
  if [ -f "$so" ] && verify "$so" warp/bin/warp.so "$m" >/dev/null; then return 0; fi
  [ -f "$WH/part2/warp.so.xz.01" ] || { say "no $WH/part2: carry wheelhouse/part2"; return 1; }
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
try:  # a Warp kernel on the GPU (NVRTC and the driver agree), once warp.so is there
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
}

slug() {
  "$PY" -c 'import re, jax
print(re.sub(r"[^a-z0-9]+", "-", jax.devices()[0].device_kind.lower()).strip("-"))'
}

stage() { # NAME SECONDS CMD...: run under a time limit that ends before the call's
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

run_mjx() { # [--resume]: measure what an earlier call's JSON lacks, with the time left
  local kind out t
  kind=$(slug)
  out=$RESULTS/mjx_throughput_$kind.json # outside the repo copy, which each call re-syncs
  t=$(($(left) - 20))
  if [ "$t" -lt 180 ]; then
    say "mjx_throughput $*: skipped, ${t}s left"
  else
    # --budget-s leaves the last measurement started ~2 minutes to end before the time limit
    # shellcheck disable=SC2086
    stage mjx_throughput "$t" "$PY" benchmarks/mjx_throughput.py --out "$out" \
      --budget-s $((t - 120)) "$@" ${MJX_ARGS:-}
  fi
  cp "$out" "$OUT/" 2>/dev/null || say "no $out"
}

run_agent() {
  local kind
  kind=$(slug)
  # shellcheck disable=SC2086
  stage sac_updates 200 "$PY" benchmarks/sac_updates.py --runs 1,8,64,256,1024 \
    --budget-s 150 --out "$OUT/sac_updates_$kind.json" ${SAC_ARGS:-}
  local w
  w=$(nproc)
  # HostLoop needs runs x envs_per_run >= workers
  # shellcheck disable=SC2086
  stage robotic_sequence_throughput 330 "$PY" benchmarks/robotic_sequence_throughput.py \
    --runs "$w,$((4 * w))" --workers "$w" --bursts 2 --baseline-procs "$w" \
    --out "$OUT/robotic_sequence_$kind.json" ${RS_ARGS:-}
  if [ -f "$SITE/warp/bin/warp.so" ] || [ "${SKIP_INSTALL:-0}" = 1 ]; then
    run_mjx --resume # what call 2's budget left out, on the same machine
  fi
}

case "$MODE" in
  stash) install_base && check ;;
  mjx) install_warp && check && run_mjx ;;
  agent) install_base && run_agent ;;
  check) check ;;
  unpack) install_base ;;
  install) install_warp ;;
  all) install_base && install_warp && check && { run_mjx; run_agent; } ;;
  *)
    sed -n '2,/^set -uo/p' "$0" | sed '$d'
    exit 2
    ;;
esac
rc=$?
say "done (exit $rc); in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $rc
