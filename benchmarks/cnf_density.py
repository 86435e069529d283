"""Density estimation with ndes.CNF (FFJORD): vanilla vs ErrorEstimate vs RNODE's free terms.

Data (nothing downloaded; the default list): scikit-learn's `make_moons`, `make_circles`
(2-D), four standardised columns of `load_wine` (4-D tabular; train statistics only),
FFJORD's 8 Gaussians (`ndes.data.toy_2d`) and the 64-d digits in bits/dim
(`ndes.data.load_digits_density`). Every method trains
the same model (`CNF.mlp`, Hutchinson, Tsit5, PID rtol=1e-3 atol=1e-5, joint batch) for the
same number of Adam steps (the budget), then reports the test NLL in nats (exact divergence),
the NFE of one `log_prob` solve of the test set and of one `sample` solve of 512 draws.
A second table times one forward `log_prob` and one train step with RNODE's free terms
(`CNFKineticEnergy` + `CNFJacobianFrobenius`) and with the standalone `ndes.JacobianFrobenius`
against plain FFJORD.

Opt-in: FFJORD's harder toys (`--datasets pinwheel 2spirals`), the model and solver
(`--width --depth --rtol --atol --lr`), `--methods budget` / `budget0.7` / `budget0.35`
(ErrorEstimate under `BudgetWeight(target=0.5)` / `0.7` / `0.35`), `stiffness`
(`StiffnessEstimate`), `local` (`LocalErrorEstimate`, a fresh sample time per step),
`taynode` (`TaylorDerivative`, K=2), `steer` (`RandomEndTime(b=--steer-b)`), every penalty
at `--weight`; `--log-every k` (the
training-step NLL and NFE every k steps, printed and kept as each record's `history`);
`--plot DIR` draws those histories (`DIR/cnf_<data>_training.png`, one line per method, the
seed mean), adding the records of earlier `--out` files given to `--plot-from`. Vanilla's NFE
grows during
training with `--datasets 2spirals --steps 3000 --width 64 --depth 3 --rtol 1e-5 --atol 1e-5`
(docs/results.md, CNF section).

    python benchmarks/cnf_density.py            # full (a few CPU minutes)
    python benchmarks/cnf_density.py --quick    # seconds-scale smoke run (used by a test)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from sklearn.datasets import load_wine, make_circles, make_moons

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import time_interleaved  # noqa: E402

import ndes  # noqa: E402

DATASETS = ("moons", "circles", "wine", "8gaussians", "digits")
TOYS = ("pinwheel", "2spirals")  # opt-in (--datasets), harder FFJORD toys
METHODS = ("vanilla", "error", "rnode")
# opt-in: ErrorEstimate under BudgetWeight(target=...), driven by hand in train()
BUDGETS = {"budget": 0.5, "budget0.7": 0.7, "budget0.35": 0.35}
# opt-in (--methods): the other regularizers ndes has, each at --weight (STEER: --steer-b)
EXTRA = ("stiffness", "local", "taynode", "steer")
ALL_METHODS = (*METHODS, *EXTRA, *BUDGETS)
KEYS = ("nll", "num_fevals")  # the history plot's panels


def load(name: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test), standardised with the training statistics."""
    if name in ("8gaussians", *TOYS):  # FFJORD's toys, standardised like the others
        x = np.asarray(ndes.data.toy_2d(name, n, key=jr.key(seed)), np.float64)
    elif name == "digits":  # bits/dim: see load_logdet
        d = ndes.data.load_digits_density(seed=seed)
        return d.x_train, d.x_test
    elif name == "moons":
        x = make_moons(n, noise=0.05, random_state=seed)[0]
    elif name == "circles":
        x = make_circles(n, noise=0.05, factor=0.5, random_state=seed)[0]
    elif name == "wine":
        x = load_wine().data[:, :4]
    else:
        raise ValueError(f"dataset={name!r} must be one of {DATASETS + TOYS}.")
    x = np.random.default_rng(seed).permutation(x)
    cut = int(0.8 * len(x))
    train, test = x[:cut], x[cut:]
    mu, sd = train.mean(0), train.std(0)
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def test_logdet(name: str, seed: int) -> np.ndarray | None:
    """The test rows' log-det-Jacobian to pixel space (digits), for bits/dim; else None."""
    if name != "digits":
        return None
    return ndes.data.load_digits_density(seed=seed).logdet_test


def regularizers(method: str, weight: float, key=None, steer_b: float = 0.5) -> tuple:
    """The regularizers of `method` at `weight`; `key` (fresh per train step) draws the
    local regularizer's sample time and STEER's end time."""
    if method == "vanilla":
        return ()
    if method == "error":
        return (ndes.ErrorEstimate(weight),)
    if method == "rnode":
        return (ndes.CNFKineticEnergy(weight), ndes.CNFJacobianFrobenius(weight))
    if method == "stiffness":  # Shampine's estimate summed over the accepted steps
        return (ndes.StiffnessEstimate(weight),)
    if method == "local":  # one extra Tsit5 step from t_s ~ U(0, T), fresh per train step
        return (ndes.LocalErrorEstimate(weight, key=_need_key(key, method)),)
    if method == "taynode":  # K = 2 (the default), on the augmented state (z, l)
        return (ndes.TaylorDerivative(weight),)
    if method == "steer":  # end time ~ U(T - b, T + b), no penalty; weight unused
        return (ndes.RandomEndTime(steer_b, key=_need_key(key, method)),)
    if method in BUDGETS:  # unit weight: the budget's weight multiplies it in train()
        return (ndes.ErrorEstimate(1.0),)
    raise ValueError(f"method={method!r} must be one of {ALL_METHODS}.")


def _need_key(key, method: str):
    if key is None:
        raise ValueError(f"method={method!r} draws a random time per train step: pass key=.")
    return key


def train(model, data, method, weight, steps, batch, seed, lr=3e-3, log_every=0, steer_b=0.5):
    """Adam on the mean NLL (+ penalty). `method="budget"` (`"budget0.7"`, `"budget0.35"`):
    ErrorEstimate's weight is set by `ndes.BudgetWeight(target=0.5)` (0.7, 0.35; warm-up 40 %
    of the steps) from each step's NFE, the optax-style `init_state` / `update` pair.
    `"local"` / `"steer"` get a fresh key per step (the step's probe key folded with 1).
    `log_every > 0` prints the step's NFE and NLL and keeps them: returns (model, seconds,
    history), the history a list of `{"step", "nll", "num_fevals", "penalty"}` (the train
    batch's NLL, unweighted penalty)."""
    opt = optax.adam(lr)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    regularizers(method, weight, jr.key(0), steer_b)  # a bad method fails before compiling
    target = BUDGETS.get(method, 0.5)
    budget = ndes.BudgetWeight(target=target, warmup=max(1, int(0.4 * steps)))
    bstate = budget.init_state(jnp.float32) if method in BUDGETS else None

    @eqx.filter_jit
    def step(model, state, bstate, xb, key):
        regs = regularizers(method, weight, jr.fold_in(key, 1), steer_b)

        def loss(m):
            out = m.log_prob(xb, key, regularizers=regs)
            nll = -jnp.mean(out.ys)
            if bstate is None:
                return nll + out.penalty, (nll, out.stats["num_fevals"], out.penalty)
            w = jax.lax.stop_gradient(bstate.weight)
            return nll + w * out.penalty, (nll, out.stats["num_fevals"], out.penalty)

        (_, (nll, nfe, pen)), g = eqx.filter_value_and_grad(loss, has_aux=True)(model)
        upd, state = opt.update(g, state)
        if bstate is not None:
            bstate = budget.update(bstate, nfe, nll, pen)
        return eqx.apply_updates(model, upd), state, bstate, nll, nfe, pen

    rng = np.random.default_rng(seed)
    key = jr.key(seed)
    history = []
    t = time.perf_counter()
    for i in range(steps):
        xb = jnp.asarray(data[rng.integers(0, len(data), batch)])
        model, state, bstate, nll, nfe, pen = step(model, state, bstate, xb, jr.fold_in(key, i))
        if log_every and (i % log_every == 0 or i == steps - 1):
            rec = {"step": i, "nll": float(nll), "num_fevals": int(nfe), "penalty": float(pen)}
            w = ""
            if bstate is not None:
                rec["weight"] = float(bstate.weight)
                w = f" weight {rec['weight']:.3g}"
            history.append(rec)
            msg = f"  [{method}] step {i}: train NLL {float(nll):.3f}, NFE {int(nfe)}{w}"
            print(msg, flush=True)
    jax.block_until_ready(model)
    return model, time.perf_counter() - t, history


def evaluate(model, test, seed, logdet=None, train=None):
    """Test NLL (exact divergence) and NFE; with `train`, the exact NLL of its first
    len(test) rows as well (`train_nll`: the fit, free of the Hutchinson noise)."""
    exact = dataclasses.replace(model, divergence="exact")
    exact_lp = eqx.filter_jit(lambda m, x: m.log_prob(x))
    lp = exact_lp(exact, jnp.asarray(test))
    extra = {}
    if train is not None:
        extra["train_nll"] = float(-jnp.mean(exact_lp(exact, jnp.asarray(train[: len(test)])).ys))
    if logdet is not None:
        d = test.shape[1]
        extra["test_bpd"] = float(
            -np.mean(np.asarray(lp.ys, np.float64) + logdet) / (d * np.log(2))
        )
    hutch = eqx.filter_jit(lambda m, x, k: m.log_prob(x, k))(model, jnp.asarray(test), jr.key(seed))
    smp = eqx.filter_jit(lambda m, k: m.sample(k, 512))(model, jr.key(seed + 1))
    return {
        "test_nll": float(-jnp.mean(lp.ys)),
        "nfe_log_prob": int(hutch.stats["num_fevals"]),
        "nfe_sample": int(smp.stats["num_fevals"]),
        **extra,
    }


def label(rec) -> str:
    """The plot label of a record: the method and its weight (STEER: b)."""
    if rec["method"] == "vanilla" or rec["method"] in BUDGETS:
        return rec["method"]
    return f"{rec['method']} {'b=' if rec['method'] == 'steer' else ''}{rec['weight']:g}"


def plot(records, out_dir) -> list[str]:
    """One PNG per data set, `out_dir/cnf_<data>_training.png`: the train-batch NLL and the
    train-step NFE against the step, one line per `label`, averaged over its seeds at the
    steps every seed logged (via `ndes.plot.plot_history`)."""
    groups: dict = {}
    for r in records:
        if r.get("history"):
            groups.setdefault(r["data"], {}).setdefault(label(r), []).append(r)
    if not groups:
        raise ValueError("plot: no record holds a training history; pass --log-every k > 0.")
    paths = []
    for data, runs in groups.items():
        lines = {}
        for lab, rs in runs.items():
            by_step = [{h["step"]: h for h in r["history"]} for r in rs]
            steps = sorted(set.intersection(*(set(b) for b in by_step)))
            name = lab if len(rs) == 1 else f"{lab} (mean of {len(rs)} seeds)"
            lines[name] = [
                {"step": s, **{k: float(np.mean([b[s][k] for b in by_step])) for k in KEYS}}
                for s in steps
            ]
        path = os.path.join(out_dir, f"cnf_{data}_training.png")
        title = f"{data}: train-batch NLL (nats) and train-step NFE"
        ndes.plot.plot_history(lines, path, keys=KEYS, logy=("num_fevals",), title=title)
        paths.append(path)
    return paths


def overhead(model, x, reps):
    """Median seconds of a forward log_prob and a train step: plain, RNODE free terms,
    standalone JacobianFrobenius (+ CNFKineticEnergy)."""
    key = jr.key(0)
    rows = {
        "plain FFJORD": (),
        "+ CNFKineticEnergy + CNFJacobianFrobenius": (
            ndes.CNFKineticEnergy(0.01),
            ndes.CNFJacobianFrobenius(0.01),
        ),
        "+ CNFKineticEnergy + JacobianFrobenius (standalone)": (
            ndes.CNFKineticEnergy(0.01),
            ndes.JacobianFrobenius(0.01, key=jr.key(1)),
        ),
    }
    fns = []
    for regs in rows.values():
        fwd = eqx.filter_jit(lambda m, r=regs: m.log_prob(x, key, regularizers=r).ys)

        def loss(m, r=regs):
            out = m.log_prob(x, key, regularizers=r)
            return -jnp.mean(out.ys) + out.penalty

        grad = eqx.filter_jit(eqx.filter_grad(loss))
        fns += [lambda f=fwd: f(model), lambda g=grad: g(model)]
    res = time_interleaved(fns, reps)
    out = []
    for i, name in enumerate(rows):
        out.append({"row": name, "forward_s": res[2 * i][0], "train_step_s": res[2 * i + 1][0]})
    return out


def summary(records) -> list[str]:
    """Mean +- std over seeds per (data, method); bits/dim where the data report it."""

    def ms(vals, fmt):
        v = np.asarray(vals, float)
        return f"{v.mean():{fmt}} ± {v.std(ddof=1) if len(v) > 1 else 0.0:{fmt}}"

    lines = [
        "| data | method | seeds | test NLL (nats; bits/dim for digits) | NFE / log_prob "
        "| NFE / sample (512) | train s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict = {}
    for r in records:
        groups.setdefault((r["data"], r["method"]), []).append(r)
    for (data, method), rs in groups.items():
        key = "test_bpd" if "test_bpd" in rs[0] else "test_nll"
        lines.append(
            f"| {data} | {method} | {len(rs)} | {ms([r[key] for r in rs], '.3f')} | "
            f"{ms([r['nfe_log_prob'] for r in rs], '.1f')} | "
            f"{ms([r['nfe_sample'] for r in rs], '.1f')} | "
            f"{ms([r['train_s'] for r in rs], '.0f')} |"
        )
    return lines


def table(records, over) -> str:
    lines = [
        "| data | method | test NLL (nats) | NFE / log_prob | NFE / sample (512) "
        "| train s (+compile) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        lines.append(
            f"| {r['data']} | {r['method']} | {r['test_nll']:.3f} | {r['nfe_log_prob']} | "
            f"{r['nfe_sample']} | {r['train_s']:.1f} |"
        )
    lines += ["", *summary(records)]
    if not over:
        return "\n".join(lines)
    lines += [
        "",
        "| regularizers | forward ms | train step ms | step / plain |",
        "| --- | --- | --- | --- |",
    ]
    base = over[0]["train_step_s"]
    for o in over:
        lines.append(
            f"| {o['row']} | {1e3 * o['forward_s']:.2f} | {1e3 * o['train_step_s']:.2f} | "
            f"{o['train_step_s'] / base:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS + TOYS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--weight", type=float, default=0.01, help="every penalty's weight")
    p.add_argument("--steer-b", type=float, default=0.5, help="STEER's half-width b (T = 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP field")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--n", type=int, default=None, help="points per 2-D data set")
    p.add_argument("--log-every", type=int, default=0, help="print train NFE every k steps")
    p.add_argument("--no-overhead", action="store_true", help="skip the timing table")
    p.add_argument("--out", default=None, help="write results.json here (a directory)")
    p.add_argument("--plot", default=None, help="draw the training histories into this dir")
    p.add_argument("--plot-from", nargs="*", default=[], help="earlier results.json to add")
    a = p.parse_args(argv)
    if a.plot and not a.log_every:
        p.error("--plot draws the training history: pass --log-every k > 0 as well.")
    steps = a.steps or (3 if a.quick else 400)
    n, batch, width = (200, 64, 16) if a.quick else (4000, 256, 32)
    width, n = a.width or width, a.n or n
    pid = diffrax.PIDController(rtol=a.rtol, atol=a.atol)
    records = []
    for seed in a.seeds or [a.seed]:
        for name in a.datasets:
            tr, te = load(name, seed, n)
            init = ndes.CNF.mlp(
                tr.shape[1], width, a.depth, key=jr.key(seed), stepsize_controller=pid
            )
            for method in a.methods:
                model, secs, hist = train(
                    init, tr, method, a.weight, steps, batch, seed, a.lr, a.log_every, a.steer_b
                )
                rec = {"data": name, "method": method, "seed": seed, "steps": steps}
                rec["weight"] = a.steer_b if method == "steer" else a.weight
                rec["train_s"] = secs
                rec.update(evaluate(model, te, seed, test_logdet(name, seed), tr))
                print(rec, flush=True)
                records.append({**rec, "history": hist})
    over = []
    if not a.no_overhead:
        x = jnp.asarray(load(a.datasets[0], a.seed, n)[0][:batch])
        model = ndes.CNF.mlp(
            x.shape[1], width, a.depth, key=jr.key(a.seed), stepsize_controller=pid
        )
        over = overhead(model, x, 3 if a.quick else 20)
    text = table(records, over)
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, steps={steps}, batch={batch}, weight={a.weight}, "
        f"width={width}, depth={a.depth}, rtol={a.rtol}, atol={a.atol}, lr={a.lr}\n"
    )
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump({"records": records, "overhead": over, "table": text}, f, indent=1)
    if a.plot:
        earlier = []
        for path in a.plot_from:
            with open(path) as f:
                earlier += json.load(f)["records"]
        for path in plot(earlier + records, a.plot):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
