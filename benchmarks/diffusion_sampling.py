"""Score-based diffusion on a 2-D toy or digits: sample quality and exact NFE of every sampler.

A `ScoreModel(ScoreMLP(2, 128, 3), VPSDE())` (noise prediction) is trained by denoising score
matching (`DSMLoss`, `ndes.fit`, Adam) on FFJORD's "8gaussians" (`ndes.data.toy_2d`), then each
sampler draws samples that are compared with held-out data by the unbiased RBF MMD^2 (median
bandwidth) and the sliced 2-Wasserstein distance: reverse SDE (Euler--Maruyama, 100 / 1000
steps), predictor--corrector (Langevin corrector), the probability-flow ODE (Tsit5, two
tolerances), DPM-Solver-2/3 at 10 and 20 NFE. Every number is the mean +- std over seeds (each
seed trains its own model). The row "data vs data" is the floor: two independent held-out sets.

With `--finetune`, each trained model is fine-tuned further for `--finetune-steps` steps (fresh
Adam at `--finetune-lr`): plain DSM (the control) and, per weight in `--weights`, DSM +
`ndes.ErrorEstimate` (`--regularizer local`: `ndes.LocalErrorEstimate`, `stiffness`:
`ndes.StiffnessEstimate`) on the probability-flow ODE of 64 prior draws per step
(`DSMLoss(flow_samples=64)`). With `--joint`, one model per weight is instead trained from
scratch for the same `--steps` with DSM + the regularizer, and compared with the plain model.
Each variant's adaptive probability-flow NFE and quality (and DPM-Solver-2/3 at 20 NFE) are
reported, with per-seed NFE ratios against its control; `--out DIR` writes all as JSON.
`--skip-samplers` leaves out the sampler table of the base models.

With `--data digits`, the same samplers run on scikit-learn's 8x8 digits
(`ndes.data.load_digits_density`, 64-d, `ScoreMLP(64, 256, 3)`); quality is measured by a
`DigitsClassifier` (an MLP with 64 ReLU hidden units trained on the real train split): the
Fréchet distance in its hidden layer to the test split, and the entropy and max share of the
samples' predicted classes; plus the test NLL in bits/dim by the probability-flow ODE
(Hutchinson divergence). `--plot DIR` writes figures of the last seed (`ndes.plot`).

    python benchmarks/diffusion_sampling.py            # full (CPU minutes)
    python benchmarks/diffusion_sampling.py --quick    # seconds-scale smoke run (used by a test)
    python benchmarks/diffusion_sampling.py --data digits --seeds 1 --plot docs/img
    python benchmarks/diffusion_sampling.py --finetune --weights 0.1 1 --skip-samplers --out DIR
"""

from __future__ import annotations

import argparse
import datetime
import json
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
from ndes.data._toys import _eight_gaussians_mixture  # noqa: E402


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
        self.dim, self.width, self.name = 2, 128, name

    def floor(self):
        return quality(self.test2, self.test, self.k_q)

    def score(self, samples):
        return quality(samples, self.test, self.k_q)

    def nll(self, model, quick):
        return None

    def exact(self):
        """8 Gaussians' closed-form score (`GaussianMixtureScore`, as `ndes.data.toy_2d` draws)."""
        if self.name != "8gaussians":
            return None
        means, covs = _eight_gaussians_mixture()
        return D.ScoreModel(D.GaussianMixtureScore(means, covs, D.VPSDE()), D.VPSDE(), "score")


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


def train(model, data, steps, key, loss=None, regularizers=(), lr=1e-3):
    res = ndes.fit(
        model, data, loss or D.DSMLoss(eps=1e-5), optax.adam(lr), key=key, batch_size=256,
        steps=steps, regularizers=regularizers, progress=False, log_every=max(steps // 10, 1),
    )  # fmt: skip
    return res.model, res.history


def fmt(vals, digits=4):
    vals = np.asarray(vals, float)
    if vals.size == 1:
        return f"{vals[0]:.{digits}g}"
    return f"{vals.mean():.{digits}g} ± {vals.std():.2g}"


def make_regularizer(kind, weight):
    if kind == "error":
        return ndes.ErrorEstimate(weight)
    if kind == "stiffness":
        return ndes.StiffnessEstimate(weight)
    return ndes.LocalErrorEstimate(weight, key=jr.key(0))


def eval_fns(n):
    """Jitted once (the cache is shared by all models of one structure): name -> fn(model, key)."""
    out = {
        f"PF-ODE rtol=atol={r:g}": eqx.filter_jit(
            lambda m, k, r=r: D.probability_flow_sample(m, k, n, rtol=r, atol=r)
        )
        for r in (1e-3, 1e-5)
    }
    for order in (2, 3):
        out[f"DPM-Solver-{order}, 20 NFE"] = eqx.filter_jit(
            lambda m, k, o=order: D.dpm_solver_sample(m, k, n, nfe=20, order=o)
        )
    return out


def ratios(ft, controls):
    """Per variant: per-seed NFE ratios (adaptive PF-ODE) and quality against its control."""
    out = {}
    for vname, rows in ft.items():
        ctrl = controls[vname]
        if vname == ctrl:
            continue
        r = {"control": ctrl}
        for ev in rows:
            if not ev.startswith("PF-ODE"):
                continue
            v, c = np.asarray(rows[ev]), np.asarray(ft[ctrl][ev])
            r[ev] = {
                "nfe_ratio": list(v[:, 0] / c[:, 0]),
                "q": list(v[:, 1]),
                "q_ctrl": list(c[:, 1]),
            }
        out[vname] = r
    return out


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
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="fine-tuning Adam lr")
    p.add_argument("--joint", action="store_true", help="also DSM + regularizer from step 0")
    p.add_argument("--weights", type=float, nargs="+", default=[1e-2], help="regularizer weights")
    p.add_argument(
        "--regularizer", default="error", choices=["error", "local", "stiffness"],
        help="ndes.ErrorEstimate, ndes.LocalErrorEstimate (one sampled step) or "
        "ndes.StiffnessEstimate",
    )  # fmt: skip
    p.add_argument("--skip-samplers", action="store_true", help="no base-model sampler table")
    p.add_argument("--out", default=None, help="write the results as JSON into this folder")
    args = p.parse_args(argv)
    q = args.quick
    steps = args.steps or (30 if q else 4000)
    seeds = args.seeds or (1 if q else 3)
    n = args.samples or (100 if q else 2000)
    ft_steps = args.finetune_steps or (5 if q else 500)
    if any(not np.isfinite(w) or w < 0 for w in args.weights):
        p.error(f"--weights {args.weights}: every weight must be finite and >= 0")

    Data = Digits if args.data == "digits" else Toy
    what = "digits" if args.data == "digits" else f"toy={args.toy}"
    print(f"# diffusion_sampling: {what}, train steps={steps}, seeds={seeds}, samples={n}")
    print(f"# jax {jax.__version__}, {platform.machine()}, {jax.devices()[0].platform}")
    table, ft, controls, floor, nlls, times = {}, {}, {}, [], [], {}
    t_start = time.time()
    flow = D.DSMLoss(eps=1e-5, flow_samples=64, flow_rtol=1e-3, flow_atol=1e-3)
    evals = None
    for seed in range(seeds):
        k_data, k_test, k_test2, k_model, k_fit, k_sample, k_q = jr.split(jr.key(seed), 7)
        ds = Data(args.toy, seed, n, q, (k_data, k_test, k_test2, k_q))
        n_s = getattr(ds, "n", n)
        evals = evals or eval_fns(n_s)
        floor.append(ds.floor())
        if hasattr(ds, "acc"):
            print(f"# seed {seed}: classifier test accuracy {ds.acc:.3f}")
        model0 = D.ScoreModel(D.ScoreMLP(ds.dim, ds.width, 3, key=k_model), D.VPSDE())
        t0 = time.time()
        model, hist = train(model0, ds.train, steps, k_fit)
        dt, last = time.time() - t0, hist[-1]["loss"]
        print(f"# seed {seed}: trained in {dt:.1f} s, last loss {last:.4f}")
        last_samples = {}
        if not args.skip_samplers:
            for name, fn in samplers(q).items():
                out = eqx.filter_jit(fn)(model, k_sample, n_s)
                table.setdefault(name, []).append((float(out.nfe), *ds.score(out.samples)))
                last_samples[name] = np.asarray(out.samples)
            nll = ds.nll(model, q)
            if nll is not None:
                nlls.append(nll)
        # variant name -> (start model, steps, loss, regularizers, lr, key, control name)
        runs = {}
        exact = getattr(ds, "exact", lambda: None)() if args.finetune or args.joint else None
        if exact is not None:  # the true flow: the NFE and quality a perfect model would get
            ex = "exact score (closed form)"
            runs[ex] = (exact, 0, None, (), None, None, ex)
        rname = type(make_regularizer(args.regularizer, 1.0)).__name__
        if args.joint:
            base = f"plain DSM, {steps} steps"
            runs[base] = (None, 0, None, (), None, None, base)
            for w in args.weights:
                reg = make_regularizer(args.regularizer, w)
                runs[f"joint, DSM + {rname}({w:g}), {steps} steps"] = (
                    model0, steps, flow, (reg,), 1e-3, k_fit, base
                )  # fmt: skip
        if args.finetune:
            lr, k_ft = args.finetune_lr, jr.fold_in(k_fit, 1)
            ctrl = "fine-tuned, plain DSM" + (f", lr {lr:g}" if lr != 1e-3 else "")
            runs[ctrl] = (model, ft_steps, D.DSMLoss(eps=1e-5), (), lr, k_ft, ctrl)
            for w in args.weights:
                reg = make_regularizer(args.regularizer, w)
                vname = ctrl.replace("plain DSM", f"DSM + {rname}({w:g})")
                runs[vname] = (model, ft_steps, flow, (reg,), lr, k_ft, ctrl)
        for vname, (start, n_steps, loss, regs, lr, key, ctrl) in runs.items():
            t0 = time.time()
            m2 = model if start is None else start  # trained below unless n_steps == 0
            if n_steps:
                m2, h = train(start, ds.train, n_steps, key, loss, regs, lr)
                print(f"# seed {seed}: {vname}: {time.time() - t0:.1f} s, last {h[-1]}")
                times.setdefault(vname, []).append(time.time() - t0)
            controls[vname] = ctrl
            rows = ft.setdefault(vname, {})
            for ev, fn in evals.items():
                out = fn(m2, k_sample)
                rows.setdefault(ev, []).append((float(out.nfe), *ds.score(out.samples)))

    print()
    print("| sampler | NFE | " + " | ".join(Data.columns) + " |")
    print("|---|---|" + "---|" * len(Data.columns))
    f = np.asarray(floor)
    cells = " | ".join(fmt(f[:, i]) for i in range(f.shape[1]))
    print(f"| data vs data (floor) | – | {cells} |")
    flat = dict(table)
    flat.update({f"{v}: {ev}": vals for v, rows in ft.items() for ev, vals in rows.items()})
    for name, vals in flat.items():
        v = np.asarray(vals)
        cells = " | ".join(fmt(v[:, i]) for i in range(1, v.shape[1]))
        print(f"| {name} | {fmt(v[:, 0])} | {cells} |")
    rat = ratios(ft, controls)
    if rat:
        col = Data.columns[0]
        print(f"\n| variant (vs its control) | NFE ratio, 1e-3 | NFE ratio, 1e-5 | {col}, 1e-3 "
              f"| control {col}, 1e-3 | train s |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for vname, r in rat.items():
            a, b = r["PF-ODE rtol=atol=0.001"], r["PF-ODE rtol=atol=1e-05"]
            t = fmt(times.get(vname, [0]), 3)
            print(f"| {vname} | {fmt(a['nfe_ratio'], 3)} | {fmt(b['nfe_ratio'], 3)} | "
                  f"{fmt(a['q'])} | {fmt(a['q_ctrl'])} | {t} |")  # fmt: skip
    if nlls:
        v = np.asarray(nlls)
        print(
            f"\n# test NLL (probability-flow ODE, Hutchinson, Tsit5 rtol=atol={v[0, 3]:g}, "
            f"{int(v[0, 2])} test images): {fmt(v[:, 0])} bits/dim, NFE {fmt(v[:, 1])}"
        )
    if args.plot and table:
        plots(args.plot, args.data, ds, model, table, last_samples, floor)
    if args.plot and rat:
        plot_variants(args.plot, args.data, ft, controls, Data.columns[0], floor)
    total = time.time() - t_start
    print(f"\n# total {total:.1f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(args.out, f"diffusion_{args.data}_{stamp}.json")
        res = dict(
            date=stamp, argv=sys.argv[1:] if argv is None else list(argv), args=vars(args),
            jax=jax.__version__, device=f"{platform.machine()} {jax.devices()[0].platform}",
            columns=["nfe", *Data.columns], floor=floor, samplers=table, variants=ft,
            controls=controls, ratios=rat, train_seconds=times, total_seconds=total,
        )  # fmt: skip
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
        print(f"# wrote {path}")


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


def plot_variants(out_dir, data, ft, controls, metric, floor):
    """Quality vs NFE of every control and its regularized variants (mean +- std over seeds):
    one line per (control, PF-ODE tolerance) through the variants, DPM-Solver at 20 NFE."""
    import ndes.plot as P

    fams = {}
    for vname, rows in ft.items():
        ctrl = controls[vname]
        for ev, vals in rows.items():
            v = np.asarray(vals)
            pt = (v[:, 0].mean(), v[:, 1].mean(), v[:, 1].std())
            if ev.startswith("PF-ODE"):
                fams.setdefault(f"{ctrl} + weights: {ev}", []).append(pt)
            elif vname == ctrl:
                fams[f"{ctrl}: {ev}"] = [pt]
    tag = "digits" if data == "digits" else "2d"
    path = f"{os.path.abspath(out_dir)}/diffusion_{tag}_variants_quality_vs_nfe.png"
    fl = float(np.mean(np.asarray(floor)[:, 0]))
    P.plot_quality_vs_nfe(fams, path, metric=metric, floor=fl, log_y=tag == "2d")
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
