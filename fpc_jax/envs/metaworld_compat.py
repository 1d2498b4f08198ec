"""Runtime patch letting metaworld 3.x build its envs on MuJoCo >= 3.17 (weld ``eq_data`` 11 -> 12).

metaworld writes an 11-long weld row into ``model.eq_data``; MuJoCo 3.17 widened the row to 12
(``mjNEQDATA``). The first 11 entries keep their meaning (anchor, relpose, torquescale), so the
patch writes the same 11 values and leaves the trailing entries at their compiled defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WELD_ROW = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])
"""The row metaworld's ``reset_mocap_welds`` writes: anchor (3), relpose (7), torquescale."""


def needs_patch() -> bool:
    """Whether the installed MuJoCo's ``eq_data`` rows are wider than metaworld's 11 values."""
    import mujoco

    return int(getattr(mujoco, "mjNEQDATA", WELD_ROW.size)) != WELD_ROW.size


def _reset_mocap_welds(self: Any) -> None:
    import mujoco

    if self.model.nmocap > 0 and self.model.eq_data is not None:
        for i in range(self.model.eq_data.shape[0]):
            if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                self.model.eq_data[i, : WELD_ROW.size] = WELD_ROW


def apply() -> bool:
    """Patch ``SawyerMocapBase.reset_mocap_welds`` if needed (idempotent); True if patched."""
    if not needs_patch():
        return False
    from metaworld import sawyer_xyz_env

    sawyer_xyz_env.SawyerMocapBase.reset_mocap_welds = _reset_mocap_welds
    return True
