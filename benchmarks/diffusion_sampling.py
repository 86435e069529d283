"""Score-based diffusion on a 2-D toy: sample quality and exact NFE of every ndes.diffusion sampler.

A `ScoreModel(ScoreMLP(2, 128, 3), VPSDE())` (noise prediction) is trained by denoising score
matching (`DSMLoss`, `ndes.fit`, Adam) on FFJORD's "8gaussians" (`ndes.data.toy_2d`), then each
sampler draws samples that are compared with held-out data by the unbiased RBF MMD^2 (median
bandwidth) and the sliced 2-Wasserstein distance: reverse SDE (Euler--Maruyama, 100 / 1000
steps), predictor--corrector (Langevin corrector), the probability-flow ODE (Tsit5, two
tolerances), DPM-Solver-2/3 at 10 and 20 NFE. Every number is the mean +- std over seeds (each
seed trains its own model). The row "data vs data" is the floor: two independent held-out sets.

With `--finetune`, each trained model is fine-tuned further for `--finetune-steps` steps twice:
plain DSM (the control) and DSM + `ndes.ErrorEstimate` (or, with `--regularizer local`,
`ndes.LocalErrorEstimate`) on the probability-flow ODE of 64 prior draws per step
(`DSMLoss(flow_samples=64)`), and the adaptive probability-flow NFE and quality of both are
reported.

    python benchmarks/diffusion_sampling.py            # full (CPU minutes)
    python benchmarks/diffusion_sampling.py --quick    # seconds-scale smoke run (used by a test)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ndes  # noqa: E402
from ndes import diffusion as D  # noqa: E402


def samplers(quick: bool):
    big = 20 if quick else 1000
    small = 10 if quick else 100
    pc = 10 if quick else 500
    out = {
        f"reverse SDE, {small} steps": lambda m, k, n: D.reverse_sde_sample(m, k, n, steps=small),
        f"reverse SDE, {big} steps": lambda m, k, n: D.reverse_sde_sample(m, k, n, steps=big),
        f"PC ({pc} steps + 1 Langevin, snr 0.16)": lambda m, k, n: D.pc_sample(
            m, k, n, steps=pc, snr=0.16
        ),
        "PF-ODE Tsit5 rtol=atol=1e-3": lambda m, k, n: D.probability_flow_sample(
            m, k, n, rtol=1e-3, atol=1e-3
        ),
        "PF-ODE Tsit5 rtol=atol=1e-5": lambda m, k, n: D.probability_flow_sample(
            m, k, n, rtol=1e-5, atol=1e-5
        ),
    }
    for order in (2, 3):
        for nfe in (10, 20):
            out[f"DPM-Solver-{order}, {nfe} NFE"] = lambda m, k, n, o=order, f=nfe: (
                D.dpm_solver_sample(m, k, n, nfe=f, order=o)
            )
    return out


def quality(x, ref, key):
    return float(D.mmd(x, ref)), float(D.sliced_wasserstein(x, ref, key, num_projections=256))


def train(model, data, steps, key, loss=None, regularizers=()):
    res = ndes.fit(
        model, data, loss or D.DSMLoss(eps=1e-5), optax.adam(1e-3), key=key, batch_size=256,
        steps=steps, regularizers=regularizers, progress=False, log_every=max(steps // 10, 1),
    )  # fmt: skip
    return res.model, res.history


def fmt(vals, digits=4):
    vals = np.asarray(vals, float)
    if vals.size == 1:
        return f"{vals[0]:.{digits}g}"
    return f"{vals.mean():.{digits}g} ± {vals.std():.2g}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--toy", default="8gaussians", choices=list(ndes.data.TOY_2D_NAMES))
    p.add_argument("--steps", type=int, default=None, help="training steps (default 4000)")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3)")
    p.add_argument("--samples", type=int, default=None, help="samples per sampler (2000)")
    p.add_argument("--finetune", action="store_true", help="also the regularized fine-tuning")
    p.add_argument("--finetune-steps", type=int, default=None, help="default 500")
    p.add_argument("--weight", type=float, default=1e-2, help="regularizer weight")
    p.add_argument(
        "--regularizer", default="error", choices=["error", "local"],
        help="ndes.ErrorEstimate (every step) or ndes.LocalErrorEstimate (one sampled step)",
    )  # fmt: skip
    args = p.parse_args(argv)
    q = args.quick
    steps = args.steps or (30 if q else 4000)
    seeds = args.seeds or (1 if q else 3)
    n = args.samples or (100 if q else 2000)
    ft_steps = args.finetune_steps or (5 if q else 500)

    print(f"# diffusion_sampling: toy={args.toy}, train steps={steps}, seeds={seeds}, samples={n}")
    print(f"# jax {jax.__version__}, {platform.machine()}, {jax.devices()[0].platform}")
    table = {}
    ft = {}
    floor = []
    t_start = time.time()
    for seed in range(seeds):
        k_data, k_test, k_test2, k_model, k_fit, k_sample, k_q = jr.split(jr.key(seed), 7)
        data = np.asarray(ndes.data.toy_2d(args.toy, 20000 if not q else 2000, key=k_data))
        test = ndes.data.toy_2d(args.toy, n, key=k_test)
        test2 = ndes.data.toy_2d(args.toy, n, key=k_test2)
        floor.append(quality(test2, test, k_q))
        model = D.ScoreModel(D.ScoreMLP(2, 128, 3, key=k_model), D.VPSDE())
        t0 = time.time()
        model, hist = train(model, data, steps, k_fit)
        dt, last = time.time() - t0, hist[-1]["loss"]
        print(f"# seed {seed}: trained in {dt:.1f} s, last loss {last:.4f}")
        for name, fn in samplers(q).items():
            out = eqx.filter_jit(fn)(model, k_sample, n)
            mm, sw = quality(out.samples, test, k_q)
            table.setdefault(name, []).append((float(out.nfe), mm, sw))
        if args.finetune:
            flow = D.DSMLoss(eps=1e-5, flow_samples=64, flow_rtol=1e-3, flow_atol=1e-3)
            if args.regularizer == "error":
                reg = ndes.ErrorEstimate(args.weight)
            else:
                reg = ndes.LocalErrorEstimate(args.weight, key=jr.key(0))
            variants = {
                "fine-tuned, plain DSM": (D.DSMLoss(eps=1e-5), ()),
                f"fine-tuned, DSM + {type(reg).__name__}({args.weight:g})": (flow, (reg,)),
            }
            for vname, (loss, regs) in variants.items():
                m2, _ = train(model, data, ft_steps, jr.fold_in(k_fit, 1), loss, regs)
                for rtol in (1e-3, 1e-5):
                    out = eqx.filter_jit(
                        lambda m, k, r=rtol: D.probability_flow_sample(m, k, n, rtol=r, atol=r)
                    )(m2, k_sample)
                    mm, sw = quality(out.samples, test, k_q)
                    ft.setdefault(f"{vname}: PF-ODE rtol=atol={rtol:g}", []).append(
                        (float(out.nfe), mm, sw)
                    )
                out = eqx.filter_jit(lambda m, k: D.dpm_solver_sample(m, k, n, nfe=20, order=3))(
                    m2, k_sample
                )
                mm, sw = quality(out.samples, test, k_q)
                ft.setdefault(f"{vname}: DPM-Solver-3, 20 NFE", []).append((20.0, mm, sw))

    print()
    print("| sampler | NFE | MMD² (RBF, median) | sliced W₂ |")
    print("|---|---|---|---|")
    f = np.asarray(floor)
    print(f"| data vs data (floor) | – | {fmt(f[:, 0])} | {fmt(f[:, 1])} |")
    for rows in (table, ft):
        for name, vals in rows.items():
            v = np.asarray(vals)
            print(f"| {name} | {fmt(v[:, 0])} | {fmt(v[:, 1])} | {fmt(v[:, 2])} |")
    print(f"\n# total {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
