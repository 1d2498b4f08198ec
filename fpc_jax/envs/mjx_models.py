"""Meta-World models for MJX, read at run time from the installed ``metaworld`` package.

``impl="warp"`` (MuJoCo Warp) loads metaworld's models unedited. ``impl="jax"`` (MJX's own JAX
pipeline, the TPU path) cannot: ``mjx.put_model`` rejects cylinder-box pairs, and the arm's two
large collision meshes (3021 and 6693 vertices) make every step far slower. ``jax_model`` applies
the edits in ``JAX_EDITS`` and nothing else; docs/mjx_backend.md measures what each one changes
against the unedited model on CPU MuJoCo. Imports of ``mujoco`` happen inside the functions, so
this module imports without the MuJoCo extras.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

PRISM_SIDES = 16
"""Sides of the convex prism that replaces each colliding cylinder (area 97.4% of the disc)."""

JAX_EDITS: dict[str, str] = {
    "cylinder_to_prism": (
        f"every colliding cylinder becomes a convex {PRISM_SIDES}-sided prism mesh of the same "
        "radius (circumscribed) and height: MJX-JAX has no cylinder-box collision "
        "(push / push-wall puck, hammer's head and handle, the nail, peg-unplug-side's plug)"
    ),
    "arm_meshes_off": (
        "the arm's collision meshes right_l6 (3021 vertices) and right_hand (6693) stop "
        "colliding (contype = conaffinity = 0); the fingers and pads (boxes) still collide. "
        "Kept on (hull <= 32 vertices) a push step compiled in 210 s and ran 6x slower on CPU"
    ),
    "mass_kept": (
        "every body keeps the unedited model's mass, centre of mass and inertia (explicit "
        "inertials), so the prisms change contact geometry only"
    ),
}
"""The edits ``impl="jax"`` makes to metaworld's models, each with its reason."""


def metaworld_assets() -> Path:
    """``metaworld/assets/sawyer_xyz`` of the installed package (without importing it)."""
    spec = importlib.util.find_spec("metaworld")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the MJX backend reads metaworld's own model files: pip install -e '.[metaworld]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "sawyer_xyz"


def metaworld_xml(name: str) -> Path:
    """The installed metaworld's model file ``name`` (e.g. ``sawyer_push_v3.xml``)."""
    path = metaworld_assets() / Path(name).name
    if not path.is_file():
        raise FileNotFoundError(f"metaworld has no model {path.name} (looked in {path.parent})")
    return path


def edit_spec(spec: Any, edits: tuple[str, ...] = tuple(JAX_EDITS)) -> list[str]:
    """Apply ``edits`` (keys of ``JAX_EDITS``) to a ``mujoco.MjSpec`` in place; returns a
    line per changed geom. ``mass_kept`` needs the unedited model's mass properties, so it
    compiles the spec once before editing."""
    import mujoco

    unknown = set(edits) - set(JAX_EDITS)
    if unknown:
        raise ValueError(f"unknown model edits {sorted(unknown)}; valid: {list(JAX_EDITS)}")
    ref = spec.compile() if "mass_kept" in edits else None
    geom = mujoco.mjtGeom
    changed = []
    for i, g in enumerate(spec.geoms):
        if not (g.contype or g.conaffinity):
            continue
        where = f"geom {i} {g.name or '-'} of body {g.parent.name}"
        if g.type == geom.mjGEOM_CYLINDER and "cylinder_to_prism" in edits:
            radius, half = float(g.size[0]), float(g.size[1])
            angle = 2 * np.pi * np.arange(PRISM_SIDES) / PRISM_SIDES
            ring = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
            caps = [np.concatenate([ring, np.full((PRISM_SIDES, 1), z)], 1) for z in (-half, half)]
            verts = np.concatenate(caps)
            mesh = spec.add_mesh()
            mesh.name = f"fpc_prism_{i}"
            mesh.uservert = verts.ravel().tolist()
            g.type, g.meshname = geom.mjGEOM_MESH, mesh.name
            changed.append(f"{where}: cylinder r={radius:.3f} h/2={half:.3f} -> prism")
        elif g.type == geom.mjGEOM_MESH and "arm_meshes_off" in edits:
            g.contype, g.conaffinity = 0, 0
            changed.append(f"{where}: mesh {g.meshname} -> no collision")
    if ref is not None:
        for body in spec.bodies[1:]:
            b = ref.body(body.name)
            body.explicitinertial = True
            body.mass, body.ipos, body.iquat = float(b.mass[0]), b.ipos.copy(), b.iquat.copy()
            body.inertia = b.inertia.copy()
    return changed


def jax_model(xml_path: str | Path, edits: tuple[str, ...] = tuple(JAX_EDITS)) -> Any:
    """The ``mujoco.MjModel`` of ``xml_path`` with ``edits`` applied (CPU MuJoCo can step it
    too, which is how the edits' own effect is measured apart from the engine's)."""
    import mujoco

    spec = mujoco.MjSpec.from_file(str(xml_path))
    edit_spec(spec, edits)
    return spec.compile()


def port_loader(impl: str, port_load: Any) -> Any:
    """A drop-in for the port's ``mjx_env.load_mj_model(xml_path, **options)``: the port's
    loader for ``warp``; for ``jax`` the edited model with the port's options copied onto it
    (timestep, solver / line-search iterations, disable flags, zeroed geom margins)."""
    if impl == "warp":
        return port_load

    def load(xml_path: str, **options: Any) -> Any:
        patched = port_load(xml_path, **options)  # the port's options on the unedited model
        model = jax_model(xml_path)
        for field in ("timestep", "iterations", "ls_iterations", "disableflags"):
            setattr(model.opt, field, getattr(patched.opt, field))
        if not np.any(patched.geom_margin):
            model.geom_margin[:] = 0.0
        return model

    return load
