"""Seeds of a fit's repeated runs (teacher runs, pretraining runs), derived from the fit's seed."""

from __future__ import annotations

import numpy as np


def run_seed(seed: int, index: int) -> int:
    """The seed of run ``index`` of a fit seeded ``seed``.

    Run 0 uses the fit's seed, so that a fit with one run is the plain fit. The others draw
    theirs from it (numpy's SeedSequence), so that neighbouring fit seeds (0, 1, 2, as a
    benchmark uses them) share no runs, which ``seed + index`` would.
    """
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] % 2**31)
