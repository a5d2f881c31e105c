"""PSA density: serum PSA divided by gland volume, the number urologists weigh with PI-RADS.

PSA density (ng/ml/cc) = PSA (ng/ml) / gland volume (ml = cc). A density above
about 0.15 ng/ml/cc is the usual threshold for a closer look; this module only
computes the number, it makes no recommendation.
"""

from __future__ import annotations

import math

__all__ = ["psa_density"]

PSA_RANGE_NG_ML = (0.0, 10000.0)


def psa_density(psa_ng_ml: float, volume_ml: float) -> float:
    """PSA (ng/ml) / gland volume (ml), in ng/ml/cc.

    Raises:
        ValueError: ``PSA must be a number in 0-10000 ng/ml, got <psa>`` or
            ``gland volume must be > 0 ml for a PSA density, got <volume>``.
    """
    if isinstance(psa_ng_ml, bool) or not isinstance(psa_ng_ml, (int, float)) or not (
        math.isfinite(psa_ng_ml) and PSA_RANGE_NG_ML[0] <= psa_ng_ml <= PSA_RANGE_NG_ML[1]
    ):
        raise ValueError(f"PSA must be a number in 0-10000 ng/ml, got {psa_ng_ml!r}")
    if isinstance(volume_ml, bool) or not isinstance(volume_ml, (int, float)) or not (
        math.isfinite(volume_ml) and volume_ml > 0
    ):
        raise ValueError(f"gland volume must be > 0 ml for a PSA density, got {volume_ml!r}")
    return float(psa_ng_ml) / float(volume_ml)
