"""The MJX-JAX model edits (fpc_jax.envs.mjx_models) on metaworld's own model files."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("metaworld")
mujoco = pytest.importorskip("mujoco")

from fpc_jax.envs import mjx_models  # noqa: E402

pytestmark = pytest.mark.metaworld

FILES = {
    "hammer-v3": ("sawyer_hammer.xml", 7),  # hammer head, handle, ends (5) + nail (2)
    "push-v3": ("sawyer_push_v3.xml", 1),  # the puck
    "peg-unplug-side-v3": ("sawyer_peg_unplug_side.xml", 1),  # the plug
    "push-wall-v3": ("sawyer_push_wall_v3.xml", 1),  # the puck
}


def _colliding(model, geom_type) -> list[int]:
    return [
        g
        for g in range(model.ngeom)
        if model.geom_type[g] == geom_type and (model.geom_contype[g] or model.geom_conaffinity[g])
    ]


@pytest.mark.parametrize("task", FILES)
def test_jax_edits_change_only_what_they_list(task):
    name, cylinders = FILES[task]
    path = mjx_models.metaworld_xml(name)
    ref = mujoco.MjModel.from_xml_path(str(path))
    spec = mujoco.MjSpec.from_file(str(path))
    changed = mjx_models.edit_spec(spec)
    model = spec.compile()
    g = mujoco.mjtGeom
    assert len(_colliding(ref, g.mjGEOM_CYLINDER)) == cylinders
    assert _colliding(model, g.mjGEOM_CYLINDER) == []  # MJX-JAX has no cylinder-box pair
    # the arm's two big meshes stop colliding; the prisms are the only colliding meshes left
    assert [model.mesh_vertnum[model.geom_dataid[i]] for i in _colliding(model, g.mjGEOM_MESH)] == [
        2 * mjx_models.PRISM_SIDES
    ] * cylinders
    assert len(changed) == cylinders + 2
    # same bodies, geoms, joints and mass properties; geometry differs only in the edited geoms
    for n in ("nbody", "ngeom", "njnt", "nq", "nsite"):
        assert getattr(model, n) == getattr(ref, n), n
    np.testing.assert_allclose(model.body_mass, ref.body_mass, rtol=1e-12)
    np.testing.assert_allclose(model.body_inertia, ref.body_inertia, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(model.body_ipos, ref.body_ipos, atol=1e-12)
    edited = {i for i in range(ref.ngeom) if ref.geom_type[i] != model.geom_type[i]}
    edited |= {i for i in range(ref.ngeom) if ref.geom_contype[i] != model.geom_contype[i]}
    assert len(edited) == cylinders + 2
    same = [i for i in range(ref.ngeom) if i not in edited]
    np.testing.assert_array_equal(model.geom_size[same], ref.geom_size[same])
    np.testing.assert_array_equal(model.geom_pos[same], ref.geom_pos[same])


def test_prism_circumscribes_the_cylinder():
    spec = mujoco.MjSpec.from_file(str(mjx_models.metaworld_xml("sawyer_push_v3.xml")))
    mjx_models.edit_spec(spec, ("cylinder_to_prism",))
    model = spec.compile()
    puck = model.geom("objGeom")
    verts = model.mesh_vert[
        model.mesh_vertadr[puck.dataid[0]] : model.mesh_vertadr[puck.dataid[0]]
        + model.mesh_vertnum[puck.dataid[0]]
    ]
    # the compiler may move the mesh to its inertial frame: compare rotation-free quantities
    r, h = 0.02, 0.02
    dist = np.linalg.norm(verts - verts.mean(0), axis=1)
    np.testing.assert_allclose(dist, np.hypot(r, h), rtol=1e-6)
    assert len(verts) == 2 * mjx_models.PRISM_SIDES


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model edits"):
        mjx_models.edit_spec(mujoco.MjSpec(), ("boxes",))
    with pytest.raises(FileNotFoundError, match="no model"):
        mjx_models.metaworld_xml("sawyer_nope.xml")
