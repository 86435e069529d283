"""Score-based diffusion on a 2-D toy or digits: sample quality and exact NFE of every sampler.

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

With `--data digits`, the same samplers run on scikit-learn's 8x8 digits
(`ndes.data.load_digits_density`, 64-d, `ScoreMLP(64, 256, 3)`); quality is measured by a
`DigitsClassifier` (an MLP with 64 ReLU hidden units trained on the real train split): the
Fréchet distance in its hidden layer to the test split, and the entropy and max share of the
samples' predicted classes; plus the test NLL in bits/dim by the probability-flow ODE
(Hutchinson divergence). `--plot DIR` writes figures of the last seed (`ndes.plot`).

    python benchmarks/diffusion_sampling.py            # full (CPU minutes)
    python benchmarks/diffusion_sampling.py --quick    # seconds-scale smoke run (used by a test)
    python benchmarks/diffusion_sampling.py --data digits --seeds 1 --plot docs/img
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


class Toy:
    """2-D toy: MMD^2 and sliced W_2 against held-out points."""

    columns = ("MMD² (RBF, median)", "sliced W₂")

    def __init__(self, name, seed, n, quick, keys):
        k_data, k_test, k_test2, self.k_q = keys
        self.train = np.asarray(ndes.data.toy_2d(name, 2000 if quick else 20000, key=k_data))
        self.test = ndes.data.toy_2d(name, n, key=k_test)
        self.test2 = ndes.data.toy_2d(name, n, key=k_test2)
        self.dim, self.width = 2, 128

    def floor(self):
        return quality(self.test2, self.test, self.k_q)

    def score(self, samples):
        return quality(samples, self.test, self.k_q)

    def nll(self, model, quick):
        return None


class Digits:
    """sklearn 8x8 digits: a DigitsClassifier (MLP, 64 ReLU hidden units) trained on the real
    train split; Fréchet distance in its hidden layer to the test split, the entropy and max
    share of the samples' predicted classes; NLL in bits/dim by the probability-flow ODE."""

    columns = ("FD (MLP hidden)", "class entropy (bits)", "max class share")

    def __init__(self, name, seed, n, quick, keys):
        self.dd = ndes.data.load_digits_density(seed=seed)
        self.train = self.dd.x_train
        kw = dict(hidden=32, max_iter=50) if quick else {}
        self.clf = D.DigitsClassifier.fit(self.dd.pixels_train, self.dd.y_train, seed=seed, **kw)
        self.acc = float(
            np.mean(np.asarray(self.clf.predict(self.dd.pixels_test)) == self.dd.y_test)
        )
        self.n = min(n, self.dd.pixels_test.shape[0])
        self.dim, self.width = 64, 256

    def floor(self):
        rng = np.random.default_rng(0)
        idx = rng.choice(self.dd.pixels_train.shape[0], self.n, replace=False)
        return self._q(self.dd.pixels_train[idx])

    def _q(self, pixels):
        q = D.digits_quality(self.clf, pixels, self.dd.pixels_test)
        return q["fd"], q["entropy_bits"], q["max_share"]

    def score(self, samples):
        with np.errstate(over="ignore"):  # exp overflow in the logistic of far-out samples: 0
            return self._q(self.dd.to_pixels(np.asarray(samples)))

    def nll(self, model, quick):
        m, tol = (20, 1e-3) if quick else (self.dd.x_test.shape[0], 1e-5)
        out = eqx.filter_jit(
            lambda mo, x, k: D.probability_flow_log_prob(
                mo, x, k, divergence="hutchinson", rtol=tol, atol=tol
            )
        )(model, self.dd.x_test[:m], jr.key(7))
        bpd = self.dd.bits_per_dim(np.asarray(out.log_prob), self.dd.logdet_test[:m])
        return bpd, float(out.nfe), m, tol


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
    p.add_argument("--data", default="toy", choices=["toy", "digits"], help="2-D toy or digits")
    p.add_argument("--toy", default="8gaussians", choices=list(ndes.data.TOY_2D_NAMES))
    p.add_argument("--plot", default=None, help="write figures into this folder")
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

    Data = Digits if args.data == "digits" else Toy
    what = "digits" if args.data == "digits" else f"toy={args.toy}"
    print(f"# diffusion_sampling: {what}, train steps={steps}, seeds={seeds}, samples={n}")
    print(f"# jax {jax.__version__}, {platform.machine()}, {jax.devices()[0].platform}")
    table, ft, floor, nlls = {}, {}, [], []
    t_start = time.time()
    for seed in range(seeds):
        k_data, k_test, k_test2, k_model, k_fit, k_sample, k_q = jr.split(jr.key(seed), 7)
        ds = Data(args.toy, seed, n, q, (k_data, k_test, k_test2, k_q))
        n_s = getattr(ds, "n", n)
        floor.append(ds.floor())
        if hasattr(ds, "acc"):
            print(f"# seed {seed}: classifier test accuracy {ds.acc:.3f}")
        model = D.ScoreModel(D.ScoreMLP(ds.dim, ds.width, 3, key=k_model), D.VPSDE())
        t0 = time.time()
        model, hist = train(model, ds.train, steps, k_fit)
        dt, last = time.time() - t0, hist[-1]["loss"]
        print(f"# seed {seed}: trained in {dt:.1f} s, last loss {last:.4f}")
        last_samples = {}
        for name, fn in samplers(q).items():
            out = eqx.filter_jit(fn)(model, k_sample, n_s)
            table.setdefault(name, []).append((float(out.nfe), *ds.score(out.samples)))
            last_samples[name] = np.asarray(out.samples)
        nll = ds.nll(model, q)
        if nll is not None:
            nlls.append(nll)
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
                m2, _ = train(model, ds.train, ft_steps, jr.fold_in(k_fit, 1), loss, regs)
                for rtol in (1e-3, 1e-5):
                    out = eqx.filter_jit(
                        lambda m, k, r=rtol, n_s=n_s: D.probability_flow_sample(
                            m, k, n_s, rtol=r, atol=r
                        )
                    )(m2, k_sample)
                    ft.setdefault(f"{vname}: PF-ODE rtol=atol={rtol:g}", []).append(
                        (float(out.nfe), *ds.score(out.samples))
                    )
                out = eqx.filter_jit(
                    lambda m, k, n_s=n_s: D.dpm_solver_sample(m, k, n_s, nfe=20, order=3)
                )(m2, k_sample)
                ft.setdefault(f"{vname}: DPM-Solver-3, 20 NFE", []).append(
                    (20.0, *ds.score(out.samples))
                )

    print()
    print("| sampler | NFE | " + " | ".join(Data.columns) + " |")
    print("|---|---|" + "---|" * len(Data.columns))
    f = np.asarray(floor)
    cells = " | ".join(fmt(f[:, i]) for i in range(f.shape[1]))
    print(f"| data vs data (floor) | – | {cells} |")
    for rows in (table, ft):
        for name, vals in rows.items():
            v = np.asarray(vals)
            cells = " | ".join(fmt(v[:, i]) for i in range(1, v.shape[1]))
            print(f"| {name} | {fmt(v[:, 0])} | {cells} |")
    if nlls:
        v = np.asarray(nlls)
        print(
            f"\n# test NLL (probability-flow ODE, Hutchinson, Tsit5 rtol=atol={v[0, 3]:g}, "
            f"{int(v[0, 2])} test images): {fmt(v[:, 0])} bits/dim, NFE {fmt(v[:, 1])}"
        )
    if args.plot:
        plots(args.plot, args.data, ds, model, table, last_samples, floor)
    print(f"\n# total {time.time() - t_start:.1f} s")


def plots(out_dir, data, ds, model, table, samples, floor):
    """Figures from the last seed's model (quality vs NFE over all seeds)."""
    import ndes.plot as P

    out_dir = os.path.abspath(out_dir)
    pick = ["reverse SDE", "PF-ODE Tsit5 rtol=atol=1e-3", "DPM-Solver-2, 20"]
    shown = {k: v for k, v in samples.items() if any(k.startswith(p) for p in pick)}
    shown = dict(list(shown.items())[-3:])
    families = {}
    for name, vals in table.items():
        fam = name.split(",")[0].split(" (")[0].split(" rtol")[0]
        v = np.asarray(vals)
        families.setdefault(fam, []).append((v[:, 0].mean(), v[:, 1].mean(), v[:, 1].std()))
    metric = type(ds).columns[0]
    fl = float(np.mean(np.asarray(floor)[:, 0]))
    tag = "digits" if data == "digits" else "2d"
    path = f"{out_dir}/diffusion_{tag}_quality_vs_nfe.png"
    paths = [P.plot_quality_vs_nfe(families, path, metric=metric, floor=fl, log_y=tag == "2d")]
    if data == "digits":
        with np.errstate(over="ignore"):
            pix = {k: ds.dd.to_pixels(v) for k, v in shown.items()}
        path = f"{out_dir}/diffusion_digits_samples.png"
        paths.append(P.plot_diffusion_digits(pix, ds.dd.pixels_test, path))
    else:
        path = f"{out_dir}/diffusion_2d_samples.png"
        paths.append(P.plot_diffusion_samples_2d(shown, np.asarray(ds.test), path))
        paths.append(P.plot_reverse_trajectories(
            model, f"{out_dir}/diffusion_2d_trajectories.png", key=jr.key(0),
            data=np.asarray(ds.test), num_trajectories=64,
        ))  # fmt: skip
    for path in paths:
        print(f"# wrote {path}")


if __name__ == "__main__":
    main()
