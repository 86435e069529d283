"""`ndes train` for score-based diffusion models (`model.type = "diffusion"`): the model and
loss builder, and the figures drawn at the end of a run (samples beside held-out data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from ndes import diffusion as nd

__all__ = ["diffusion_model", "diffusion_figures"]


def diffusion_model(m, task, key) -> tuple[Any, Any, str]:
    """A `ScoreModel` (`ScoreMLP(d, width, depth)` on a VP or VE SDE) and its `DSMLoss`."""
    sde = nd.VPSDE(schedule=m.schedule) if m.sde == "vp" else nd.VESDE()
    net = nd.ScoreMLP(task.size, m.width, m.depth, key=key)
    model = nd.ScoreModel(net, sde, parametrisation=m.parametrisation)
    loss = nd.DSMLoss(m.eps, m.weighting, flow_samples=m.flow_samples, flow_rtol=m.flow_rtol)
    sde_desc = f"VP ({m.schedule})" if m.sde == "vp" else "VE"
    desc = (
        f"score-based diffusion, {sde_desc} SDE, ScoreMLP {task.size}-{m.width}x{m.depth}, "
        f"{m.parametrisation} parametrisation, DSM ({m.weighting})"
    )
    return model, loss, desc


def _samples(spec, model, key, n: int):
    """Samples for the figure: DPM-Solver-2 at `sample_nfe` for a VP SDE (its fast sampler),
    the adaptive probability-flow ODE for a VE SDE; returns (name, samples, nfe)."""
    if spec.sde == "vp":
        out = nd.dpm_solver_sample(model, key, n, nfe=spec.sample_nfe, order=2)
        name = f"DPM-Solver-2, {spec.sample_nfe} NFE"
    else:
        out = nd.probability_flow_sample(model, key, n)
        name = "probability-flow ODE"
    return name, np.asarray(out.samples), int(out.nfe)


def diffusion_figures(task, seed: int, spec, model, run_dir) -> list:
    """`samples.png`: samples beside the held-out data (2-D scatter, or digit grids mapped
    back to pixels)."""
    from ndes.plot import plot_diffusion_digits, plot_diffusion_samples_2d

    key = jax.random.key(seed + 1)
    path = Path(run_dir) / "samples.png"
    if task.size == 2:
        test = np.asarray(task.test)
        name, x, nfe = _samples(spec, model, key, min(2000, len(test)))
        return [plot_diffusion_samples_2d({f"{name} ({nfe})": x}, test, path)]
    dd = task.extra  # DigitsDensity: model space -> pixels
    name, x, _ = _samples(spec, model, key, 36)
    with np.errstate(over="ignore"):  # far-out logits map to pixel 0 or 16, as intended
        pixels = dd.to_pixels(x)
    return [plot_diffusion_digits({name: pixels}, dd.pixels_test, path)]
