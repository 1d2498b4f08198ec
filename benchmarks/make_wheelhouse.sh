#!/usr/bin/env bash
# Build wheelhouse/: the Python packages the GPU benchmarks need, for a GPU machine without network
# access that takes files in transfers of bounded size (64 MiB with a copy of this repository);
# benchmarks/gpu_session.sh `unpack` and `install` put them in place there.
#
#   bash benchmarks/make_wheelhouse.sh     # on a machine with network; ~6 min of xz the first time
#
# The GPU machine is taken to have Python 3.12 (x86-64) with JAX, flax, optax, chex, orbax, numpy,
# scipy, absl-py, etils, imageio, packaging, pyyaml, tqdm, matplotlib; it lacks the PACKAGES below.
# Their cp312 manylinux wheels total ~255 MiB (warp-lang alone 142 MiB: its warp.so is a 291 MB
# library holding NVRTC and MathDx, still 77 MB under xz -9e), so they cannot travel as wheels
# in one transfer. This script unpacks them (what `pip install --no-deps --target` writes), prunes
# what no benchmark touches (PRUNE; warp-clang.so is Warp's CPU backend, unused on a GPU; the
# model meshes and textures of every Meta-World task but TASKS), hard-links MTCWorldMJX's copy
# of metaworld's assets to metaworld's, and packs:
#
#   wheelhouse/part1/base.tar.xz      every package except warp/bin/warp.so
#   wheelhouse/part1/warp.so.xz.00    the first bytes of xz(warp.so)
#   wheelhouse/part2/warp.so.xz.01    the rest
#   wheelhouse/part{1,2}/MANIFEST     versions and sha256s (benchmarks/gpu_session.sh checks them)
#
# The two parts are of equal size (~45 MiB), each under PART_MAX_MIB (default 56) so that it plus
# the working tree (~6 MiB) fits one transfer; warp.so spans both, so benchmarks/gpu_session.sh
# `unpack` (part1) must run before `install` (part2) on the GPU machine.
# Kept as caches: wheelhouse/download (the wheels), wheelhouse/site (the unpacked tree),
# wheelhouse/cache (xz of warp.so by its sha256). PY: a Python with pip, mujoco and metaworld
# (default .venv/bin/python) to list the assets of TASKS.
set -euo pipefail

cd "$(dirname "$0")/.."
WH=${WHEELHOUSE:-wheelhouse}
PART_MAX_MIB=${PART_MAX_MIB:-56}
PY=${PY:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
TASKS=${TASKS:-hammer-v3 push-v3 peg-unplug-side-v3 push-wall-v3}
PACKAGES=(
  metaworld==3.0.0 mujoco==3.16.0 mujoco-mjx==3.16.0 mujoco-warp==3.16.0 warp-lang==1.18.0
  mtcworldmjx==0.4.0 gymnasium==1.4.0 farama-notifications==0.0.6 glfw==2.11.0
  pyopengl==3.1.10 trimesh==5.2.0 websockets==17.4
)
PRUNE=(
  mujoco/experimental mujoco/mjx/test_data mujoco/testdata 'mujoco/_render_filament.*.so'
  'mujoco/_simulate.*.so' mujoco_warp/test_data warp/tests warp/examples warp/bin/warp-clang.so
)
SO=warp/bin/warp.so
mib() { awk -v b="$1" 'BEGIN { printf "%7.1f", b / 1048576 }'; }

mkdir -p "$WH/download" "$WH/cache"
nice -n 15 "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$WH/download" \
  "${PACKAGES[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "wheels (MiB):"
for w in "$WH"/download/*.whl; do echo "  $(mib "$(stat -c %s "$w")")  $(basename "$w")"; done

rm -rf "$WH/site" "$WH/part1" "$WH/part2"
mkdir -p "$WH/site" "$WH/part1" "$WH/part2"
for w in "$WH"/download/*.whl; do unzip -q -o "$w" -d "$WH/site"; done
(cd "$WH/site" && for p in "${PRUNE[@]}"; do eval "rm -rf $p"; done)
find "$WH/site" \( -name __pycache__ -o -name '*_test.py' \) -prune -exec rm -rf {} +

# Keep the meshes and textures that the models of TASKS load; drop the other tasks'.
nice -n 15 "$PY" - "$WH/site" $TASKS <<'PYEOF'
import sys
from pathlib import Path

import metaworld
import mujoco
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

site, tasks = Path(sys.argv[1]), sys.argv[2:]
ours = Path(metaworld.__file__).parent / "assets"
used = set()
for task in tasks:
    xml = Path(ALL_V3_ENVIRONMENTS[task].model_name.fget(None))
    staged = site / "metaworld" / "assets" / xml.relative_to(ours)
    spec = mujoco.MjSpec.from_file(str(staged))
    for items, folder in ((spec.meshes, spec.meshdir), (spec.textures, spec.texturedir)):
        used |= {(staged.parent / folder / x.file).resolve() for x in items if x.file}
binary = {".png", ".jpg", ".stl", ".obj", ".msh", ".skn"}
dropped = 0
for assets in (site / "metaworld" / "assets", site / "MTCWorldMJX" / "assets"):
    for f in assets.rglob("*"):
        rel = f.relative_to(assets)
        twin = (site / "metaworld" / "assets" / rel).resolve()
        if f.suffix.lower() in binary and twin not in used:
            dropped += f.stat().st_size
            f.unlink()
print(f"assets of {' '.join(tasks)}: {len(used)} meshes/textures kept, {dropped >> 20} MiB dropped")
PYEOF
(cd "$WH/site/metaworld/assets" && find . -type f | while read -r f; do
  other=../../MTCWorldMJX/assets/$f
  if [ -f "$other" ] && cmp -s "$f" "$other"; then ln -f "$f" "$other"; fi
done)

tar -C "$WH/site" --sort=name --exclude="./$SO" -cf - . | nice -n 15 xz -9e -T1 \
  >"$WH/part1/base.tar.xz"
so_sha=$(sha256sum "$WH/site/$SO" | cut -d' ' -f1)
so_xz=$WH/cache/warp.so.$so_sha.xz
if [ ! -s "$so_xz" ]; then
  nice -n 15 xz -9e -T1 -c "$WH/site/$SO" >"$so_xz.tmp" && mv "$so_xz.tmp" "$so_xz"
fi

max=$((PART_MAX_MIB * 1048576 - 65536))
base=$(stat -c %s "$WH/part1/base.tar.xz")
total=$(stat -c %s "$so_xz")
head_bytes=$(((base + total + 1) / 2 - base)) # two parts of equal size
if [ "$head_bytes" -le 0 ] || [ $((base + head_bytes)) -gt "$max" ] ||
  [ $((total - head_bytes)) -gt "$max" ]; then
  echo "does not fit two parts of $PART_MAX_MIB MiB: base $base B, xz(warp.so) $total B" >&2
  exit 1
fi
head -c "$head_bytes" "$so_xz" >"$WH/part1/warp.so.xz.00"
tail -c +"$((head_bytes + 1))" "$so_xz" >"$WH/part2/warp.so.xz.01"

{
  echo "# wheelhouse for benchmarks/gpu_session.sh, built $(date -u +%FT%TZ)"
  echo "# python 3.12, manylinux x86_64; pruned: ${PRUNE[*]}; assets of: $TASKS"
  for p in "${PACKAGES[@]}"; do echo "package $p"; done
  echo "sha256 $SO $so_sha"
  for f in part1/base.tar.xz part1/warp.so.xz.00 part2/warp.so.xz.01; do
    echo "sha256 $f $(sha256sum "$WH/$f" | cut -d' ' -f1)"
  done
} >"$WH/part1/MANIFEST"
cp "$WH/part1/MANIFEST" "$WH/part2/MANIFEST"

tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | du -cb --files0-from=- |
  tail -1 | cut -f1)
echo "packed (MiB):"
for f in "$WH"/part1/* "$WH"/part2/*; do echo "  $(mib "$(stat -c %s "$f")")  $f"; done
for part in part1 part2; do
  size=$(du -cb "$WH/$part" | tail -1 | cut -f1)
  echo "transfer $WH/$part: $(mib "$size") MiB + working tree $(mib "$tree") MiB" \
    "= $(mib $((size + tree))) MiB of 64"
done
