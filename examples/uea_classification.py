"""Classify JapaneseVowels (or another shipped UEA set) with a neural CDE or a stable neural
SDE (Langevin-type, `ndes.NeuralLSDE`), vanilla vs ErrorEstimate, at 0 % and 30 % missing
observations.

    python examples/uea_classification.py --steps 1000             # NCDE: 3 seeds x {0, 30 %}
    python examples/uea_classification.py --model lsde --rtol 1e-2 --steps 200
    python examples/uea_classification.py --seeds 1 --steps 50     # a quick look
    python examples/uea_classification.py --model lsde --reg error --budget 100
    python examples/uea_classification.py --ncde-solver bosh3 --reg none   # 3 NFE / obs.

Pipeline: `ndes.data.load_uea` (train/test as shipped, seeded missingness, train-only
standardisation) -> `ndes.data.prepare_cde` (time, forward-filled values, cumulative
observation count per channel; backward-Hermite cubic coefficients; each series' last real
observation time) -> `ndes.NeuralCDE` in `ndes.models.CDEClassifier` (joint batch, Tsit5 +
PID) trained with `ndes.fit` on `ndes.train.classification_loss` (Adam, by default lr 1e-2
with warm-up and cosine decay).
`--model lsde`: `ndes.NeuralLSDE` in `ndes.models.StableSDEClassifier`, with the same path as
drift input (Oh et al. 2024). Its noise
is additive, so by default it is solved adaptively with `diffrax.ShARK` (strong order 1.5 for
additive noise, embedded error estimate) + PID on a `VirtualBrownianTree` with space-time
Levy area; `--sde-solver heun` is the generic (any-noise) alternative,
`--sde-solver euler` the paper's fixed-step Euler-Maruyama on the grid (no error estimate,
so no ErrorEstimate). All series share the padded grid (the control is constant after a
series ends).
`--budget N` replaces the fixed ErrorEstimate weight by `ndes.BudgetWeight(target_nfe=N)`.
Prediction cost is the NFE of the test-set solve without regularizers, per series (one joint
solve of the batch: the count per solve of the batch).

Writes `--out/results.json` (one record per run), prints a table with mean +- std and draws
`--out/tradeoff.png` (accuracy against NFE per prediction, one panel per missing rate).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ndes
from ndes.data import load_uea, prepare_cde
from ndes.models import CDEClassifier, StableSDEClassifier
from ndes.train import classification_loss

SDE_SOLVERS = {"heun": diffrax.Heun, "shark": diffrax.ShARK, "euler": diffrax.Euler}


def build(
    kind, channels, hidden, num_classes, width, seed, rtol, sde_solver="shark", grid=None,
    ncde_solver="tsit5", time_span=10.0,
):  # fmt: skip
    """A classifier on `(times, coeffs, t1)`: `ndes.NeuralCDE` or `ndes.NeuralLSDE`."""
    ctrl = diffrax.PIDController(rtol=rtol, atol=rtol * 1e-2)
    if kind == "ncde":
        # bosh3: the model's default, one fixed Bosh3 step per observation interval.
        adaptive = dict(solver=diffrax.Tsit5(), stepsize_controller=ctrl)
        if ncde_solver == "bosh3":
            adaptive = {}
        cde = ndes.NeuralCDE(
            channels, hidden, num_classes, width, 2, key=jax.random.key(seed), **adaptive
        )
        return CDEClassifier(cde)
    fixed = sde_solver == "euler"
    sde = ndes.NeuralLSDE(
        hidden,
        width,
        2,
        key=jax.random.key(seed),
        input_channels=channels,
        out_size=num_classes,
        solver=SDE_SOLVERS[sde_solver](),
        # Additive noise: Ito and Stratonovich coincide; Euler is the paper's Ito solver.
        sde_type="ito" if fixed else "stratonovich",
        stepsize_controller=diffrax.ConstantStepSize() if fixed else ctrl,
        num_steps=grid if fixed else None,
        time_span=time_span or None,  # the model's clock; 0: the data's own time
    )
    return StableSDEClassifier(sde)


def optimiser(lr, schedule, steps):
    if schedule == "cosine":
        return optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, min(50, steps // 10), steps))
    return optax.adam(lr)


def run_one(a, missing, reg, seed, progress):
    """One training run; `a` holds the command-line settings (see `main`)."""
    kind, name, weight, steps = a.model, a.dataset, a.weight, a.steps
    data = load_uea(name, missing=missing, seed=seed, max_length=a.max_length or None)
    train, test = prepare_cde(data.train), prepare_cde(data.test)
    grid = a.grid or None  # None: the model's own one step per interval of the padded grid
    model = build(
        kind, train.channels, a.hidden, data.num_classes, a.width, seed, a.rtol, a.sde_solver, grid,
        a.ncde_solver, a.time_span,
    )  # fmt: skip
    regs = (ndes.ErrorEstimate(weight),) if reg == "error" else ()

    def predict(model, b):
        logits, out = model(b.times, b.coeffs, b.t1, key=jax.random.key(seed + 2000))
        return jnp.argmax(logits, -1), out.stats["num_fevals"]

    t = time.perf_counter()
    res = ndes.fit(
        model,
        train,
        classification_loss,
        optimiser(a.lr, a.schedule, steps),
        key=jax.random.key(seed + 1000),
        batch_size=a.batch,
        steps=steps,
        regularizers=regs,
        nfe_budget=a.budget if reg == "error" else None,
        budget_lr=a.budget_lr,
        progress=progress,
    )
    train_s = time.perf_counter() - t
    predict_jit = eqx.filter_jit(predict)
    pred, nfe = predict_jit(res.model, test)
    jax.block_until_ready(pred)
    t = time.perf_counter()
    pred, nfe = jax.block_until_ready(predict_jit(res.model, test))
    predict_s = time.perf_counter() - t
    acc = float(jnp.mean(pred == test.labels))
    return {
        "model": kind,
        "dataset": name,
        "missing": missing,
        "regularizer": reg,
        "weight": weight if reg != "none" else 0.0,
        "budget": a.budget if reg != "none" else None,
        "budget_lr": a.budget_lr if reg != "none" and a.budget is not None else None,
        "method": method_label(reg, weight, a.budget, a.budget_lr),
        "seed": seed,
        "steps": steps,
        "lr": a.lr,
        "schedule": a.schedule,
        "solver": solver_name(a),
        "rtol": a.rtol,
        "accuracy": acc,
        "nfe_per_prediction": int(nfe),
        "train_s": train_s,
        "predict_s": predict_s,
        "train_nfe_last": res.history[-1].get("num_fevals") if res.history else None,
    }


def solver_name(a):
    if a.model == "lsde" and a.sde_solver == "euler":
        return f"Euler, {a.grid or 'padded length - 1'} steps"
    if a.model == "ncde" and a.ncde_solver == "bosh3":
        return "Bosh3, one step per observation interval"
    name = "Tsit5" if a.model == "ncde" else SDE_SOLVERS[a.sde_solver].__name__
    return f"{name} + PID(rtol={a.rtol}, atol={a.rtol * 1e-2:g})"


def method_label(reg, weight, budget, budget_lr=0.1):
    if reg == "none":
        return "vanilla"
    if budget is not None:
        return f"error(budget {budget:g}, from {weight:g}, lr {budget_lr:g})"
    return f"error({weight:g})"


def summarise(records):
    groups: dict = {}
    for r in records:
        groups.setdefault((r["missing"], r["method"]), []).append(r)
    lines = [
        f"{'missing':>7} {'method':>18} {'seeds':>5} {'accuracy':>15} {'NFE/pred':>15} "
        f"{'train s':>13}",
    ]
    for (missing, reg), rs in sorted(groups.items()):
        acc = np.array([r["accuracy"] for r in rs])
        nfe = np.array([r["nfe_per_prediction"] for r in rs])
        tr = np.array([r["train_s"] for r in rs])
        lines.append(
            f"{missing:7.0%} {reg:>18} {len(rs):5d} {acc.mean():7.3f} ± {acc.std():.3f} "
            f"{nfe.mean():7.1f} ± {nfe.std():5.1f} {tr.mean():6.0f} ± {tr.std():4.0f}"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="JapaneseVowels")
    p.add_argument("--model", choices=["ncde", "lsde"], default="ncde")
    p.add_argument("--missing", type=float, nargs="+", default=[0.0, 0.3])
    p.add_argument("--reg", choices=["none", "error", "both"], default="both")
    p.add_argument("--weight", type=float, default=1e-2, help="ErrorEstimate weight")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="instead of a fixed weight: ndes.BudgetWeight(target_nfe=BUDGET), starting at "
        "--weight (NFE per training solve, i.e. per joint batch)",
    )
    p.add_argument(
        "--budget-lr", type=float, default=0.1, help="BudgetWeight's dual step size (lr)"
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument(
        "--sde-solver",
        choices=sorted(SDE_SOLVERS),
        default="shark",
        help="lsde only: shark/heun adaptive (VirtualBrownianTree), euler fixed-step (grid)",
    )
    p.add_argument(
        "--grid", type=int, default=0, help="lsde euler: steps (default: padded length - 1)"
    )
    p.add_argument(
        "--time-span",
        type=float,
        default=10.0,
        help="lsde only: the model's clock, [t0, t1] -> [0, TIME_SPAN] (NeuralLSDE's default "
        "10; 0: the data's own time)",
    )
    p.add_argument(
        "--ncde-solver",
        choices=["tsit5", "bosh3"],
        default="tsit5",
        help="ncde only: tsit5 adaptive (PID at --rtol), or bosh3 with one fixed step per "
        "observation interval (NeuralCDE's default; 3 NFE per observation; docs/results.md)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=0,
        help="keep every stride-th point of series longer than this (load_uea's max_length; "
        "0: every point). Helps the NCDE on long series (docs/results.md)",
    )
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (peak if cosine)")
    p.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default="cosine",
        help="constant, or linear warm-up then cosine decay to 0 over --steps",
    )
    p.add_argument("--out", default="runs/uea")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.model == "ncde" and a.ncde_solver == "bosh3" and a.reg != "none":
        p.error(
            "--ncde-solver bosh3 takes fixed steps: ErrorEstimate cannot change its NFE "
            "(--reg error and the default --reg both); use --reg none, or the adaptive "
            "--ncde-solver tsit5."
        )
    if a.model == "lsde" and a.sde_solver == "euler" and a.reg != "none":
        p.error(
            "--sde-solver euler has no error estimate for ErrorEstimate (and fixed steps: its "
            "NFE cannot change); use --reg none, or an adaptive --sde-solver shark|heun."
        )
    regs = ["none", "error"] if a.reg == "both" else [a.reg]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for missing in a.missing:
        for seed in range(a.seeds):
            for reg in regs:
                r = run_one(a, missing, reg, seed, None if not a.no_progress else False)
                records.append(r)
                print(json.dumps(r), flush=True)
                (out / "results.json").write_text(json.dumps(records, indent=1))
    print(
        f"\n{a.dataset}, {a.model} hidden {a.hidden}, width {a.width}, {a.steps} Adam steps, "
        f"batch {a.batch}, lr {a.lr} ({a.schedule}), {solver_name(a)}, "
        f"ErrorEstimate weight {a.weight}"
    )
    print(summarise(records))
    fig = ndes.plot.plot_tradeoff(
        records, out / "tradeoff.png", panel="missing", title=f"{a.dataset}, {a.model}"
    )
    print(f"accuracy vs NFE per prediction: {fig}")


if __name__ == "__main__":
    main()
