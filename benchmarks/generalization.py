"""The generalization suite: every model family with its *default* settings on real problems
beyond those ndes was developed on, vanilla vs each regularizer at its default weight vs the
cost budget `BudgetWeight(target=0.5)`, with a standard baseline where one exists offline.

Families (one module each, `benchmarks/_gen_*.py`):

- `uea`: every classification set aeon ships (`ndes.data.available_uea()`), `NeuralCDE` and
  `NeuralLSDE`, 0 % and 30 % missing; baseline aeon's MiniRocket.
- `ode`: trajectory fitting of known ODE systems by a neural ODE in a hand-written diffrax
  training loop changed by one line (`ndes.diffeqsolve`), the budget driven by hand.
- `latent`: `LatentSDE` + `ndes.fit` on real forecasting series aeon ships.
- `digits`: the demo's problem (a development problem).

    python benchmarks/generalization.py --quick                 # seconds per run (tests)
    python benchmarks/generalization.py --families uea --models ncde --missing 0 --seeds 1
    python benchmarks/generalization.py --table runs/generalization/results.json

Results are appended to `--out/results.json` as they come (a rerun skips the runs already
there, so an interrupted suite resumes), then a table per problem is printed: the task
metric (mean +- std over seeds), NFE per prediction and its ratio to vanilla, the change of
the metric against vanilla, train seconds; and `--out/tradeoff.png` (NFE ratio against
metric change, every problem and method).

The budget goal checked in the summary (issue 15): at `target=0.5`, a problem passes when
its prediction NFE is <= 0.6x vanilla and its metric is within 1 point of accuracy (0.01),
or within 5 % of vanilla's loss / negative ELBO.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _gen_common as common  # noqa: E402

FAMILIES = ("uea", "digits", "ode", "latent")


def _module(family: str):
    import importlib

    return importlib.import_module(f"_gen_{family}")


def _key(r: dict) -> tuple:
    if "suite_key" in r:  # the plan entry that made it (a family may name itself otherwise)
        return tuple(r["suite_key"])
    return (r["family"], r["problem"], r["model"], float(r["missing"]), r["method"], r["seed"])


def _plan(a) -> list[dict]:
    """Every run to make, as keyword dicts for the family's `run`."""
    out = []
    for fam in a.families:
        mod = _module(fam)
        problems = list(mod.PROBLEMS)
        if fam == "uea":
            import ndes

            problems = list(ndes.data.available_uea())
        if a.problems:  # in the order given
            problems = [p for p in a.problems if p in problems]
        models = [m for m in a.models if m in getattr(mod, "MODELS", (None,))] or [None]
        missings = a.missing if fam == "uea" else [0.0]
        for problem in problems:
            for model in models:
                for missing in missings:
                    for seed in range(a.seeds):
                        if fam == "uea" and a.baseline:
                            out.append(
                                dict(
                                    family=fam,
                                    problem=problem,
                                    model="MiniRocket",
                                    missing=missing,
                                    method="baseline",
                                    seed=seed,
                                )
                            )
                        for method in a.methods:
                            out.append(
                                dict(
                                    family=fam,
                                    problem=problem,
                                    model=model,
                                    missing=missing,
                                    method=method,
                                    seed=seed,
                                )
                            )
    return out


def _execute(spec: dict, cfg: common.SuiteConfig) -> list[dict]:
    mod = _module(spec["family"])
    if spec["method"] == "baseline":
        return [mod.baseline(spec["problem"], spec["missing"], spec["seed"], cfg)]
    kw = {}
    if spec["family"] == "uea":
        kw = dict(model_kind=spec["model"], missing=spec["missing"])
    return mod.run(spec["problem"], spec["method"], spec["seed"], cfg, **kw)


def _spec_key(spec: dict, model_of: dict) -> tuple:
    return (
        spec["family"],
        spec["problem"],
        spec["model"] or model_of.get(spec["family"]),
        float(spec["missing"]),
        spec["method"],
        spec["seed"],
    )


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


# ---- summary ---------------------------------------------------------------------------


def _quality_ok(metric: str, value: float, vanilla: float) -> bool:
    if metric == "accuracy":
        return value >= vanilla - 0.01
    if metric.startswith("elbo"):  # higher is better; within 5 % of the negative ELBO
        return -value <= -vanilla + 0.05 * abs(vanilla)
    return value <= vanilla * 1.05  # a loss


def summarise(records: list[dict]) -> tuple[str, list[dict]]:
    """The table (text) and one normalised record per run (NFE ratio, metric change)."""
    groups: dict[tuple, list[dict]] = {}
    skipped = sorted({(r["problem"], r["method"]) for r in records if r.get("value") is None})
    records = [r for r in records if r.get("value") is not None]
    for r in records:
        groups.setdefault(
            (r["family"], r["problem"], r["missing"], r["model"], r["method"]), []
        ).append(r)
    problems = sorted({k[:3] for k in groups})
    lines = [
        f"{'problem':>24} {'miss':>4} {'model':>10} {'method':>18} {'n':>2} {'metric':>16} "
        f"{'NFE/pred':>14} {'xNFE':>6} {'dmetric':>8} {'NFE/obs':>7} {'train s':>8} {'goal':>5}"
    ]
    normalised, budget_pass, budget_all, base_gap = [], [], [], []
    for fam, prob, miss in problems:
        models = sorted({k[3] for k in groups if k[:3] == (fam, prob, miss)})
        for model in models:
            van = groups.get((fam, prob, miss, model, "vanilla"))
            v_val = float(np.mean([r["value"] for r in van])) if van else None
            v_nfe = float(np.mean([r["nfe_per_prediction"] for r in van])) if van else None
            methods = [k[4] for k in groups if k[:4] == (fam, prob, miss, model)]
            order = {m: i for i, m in enumerate(("baseline",) + common.METHODS)}
            for method in sorted(methods, key=lambda m: order.get(m, 99)):
                rs = groups[(fam, prob, miss, model, method)]
                vals = np.array([r["value"] for r in rs])
                nfes = np.array([r["nfe_per_prediction"] for r in rs])
                obs = float(np.mean([r["observations"] for r in rs]))
                ratio = nfes.mean() / v_nfe if v_nfe else float("nan")
                delta = vals.mean() - v_val if v_val is not None else float("nan")
                goal = ""
                if method == "budget" and v_val is not None:
                    ok = ratio <= 0.6 and _quality_ok(rs[0]["metric"], vals.mean(), v_val)
                    goal = "pass" if ok else "miss"
                    budget_all.append((fam, prob, miss, model))
                    if ok:
                        budget_pass.append((fam, prob, miss, model))
                if method == "baseline":
                    nds = [
                        np.mean([r["value"] for r in groups[k]])
                        for k in groups
                        if k[:3] == (fam, prob, miss) and k[4] == "vanilla"
                    ]
                    base_gap.append((prob, miss, float(vals.mean()), nds))
                dev = "*" if rs[0].get("developed_on") else ""
                lines.append(
                    f"{prob + dev:>24} {miss:4.0%} {str(model):>10} {method:>18} {len(rs):2d} "
                    f"{vals.mean():7.3f} ± {vals.std():5.3f} {nfes.mean():8.1f} ± "
                    f"{nfes.std():4.0f} {ratio:6.2f} {delta:+8.3f} {nfes.mean() / obs:7.1f} "
                    f"{np.mean([r['train_s'] for r in rs]):8.1f} {goal:>5}"
                )
                for r in rs:
                    if v_nfe and method not in ("vanilla", "baseline"):
                        scale = abs(v_val) if r["metric"] != "accuracy" and v_val else 1.0
                        sign = 1.0 if r["higher_is_better"] else -1.0
                        normalised.append(
                            {
                                "method": method,
                                "problem": prob,
                                "nfe_ratio": r["nfe_per_prediction"] / v_nfe,
                                "quality_change": sign * (r["value"] - v_val) / scale,
                            }
                        )
    lines.append("")
    lines.append(
        f"budget (target {common.BUDGET_TARGET}): {len(budget_pass)}/{len(budget_all)} "
        "problems at <= 0.6x vanilla NFE within 1 point (or 5 % of the loss)"
    )
    for prob, miss, b, nds in base_gap:
        if not nds:
            continue
        best = max(nds)
        lines.append(
            f"baseline {prob} ({miss:.0%}): MiniRocket {b:.3f}, best ndes vanilla "
            f"{best:.3f} (gap {b - best:+.3f})"
        )
    for prob, method in skipped:
        lines.append(f"not applicable: {method} on {prob}")
    lines.append("* = a problem ndes was developed on")
    return "\n".join(lines), normalised


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds per run")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--problems", nargs="+", default=None, help="only these problem names")
    p.add_argument(
        "--models",
        nargs="+",
        default=["ncde", "lsde"],
        help="uea: ncde lsde (also lnsde gsde, fixed-step --lsde-solver only)",
    )
    p.add_argument("--missing", type=float, nargs="+", default=[0.0, 0.3], help="uea only")
    p.add_argument("--methods", nargs="+", choices=common.METHODS, default=list(common.METHODS))
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (0: family default)")
    p.add_argument("--max-length", type=int, default=0, help="subsample longer series")
    p.add_argument(
        "--ncde-solver",
        default="tsit5",
        choices=("tsit5", "midpoint", "heun", "ralston", "bosh3"),
        help="uea NCDE: adaptive tsit5 (default) or fixed, --ncde-substeps per interval",
    )
    p.add_argument("--ncde-substeps", type=int, default=1, help="fixed steps per interval")
    p.add_argument(
        "--ncde-logsig-depth",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="uea NCDE by the log-ODE method: log-signatures of this depth over windows of "
        "the full series (as many windows as --max-length points); 0 = off",
    )
    p.add_argument(
        "--lsde-solver",
        default="shark",
        choices=("shark", "euler", "heun"),
        help="uea LSDE: adaptive shark (default) or fixed, one step per interval",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="uea: decoupled weight decay (optax.adamw), 0 = Adam; models are labelled +wd",
    )
    p.add_argument(
        "--lsde-time-span",
        type=float,
        default=None,
        help="uea stable SDEs: time_span, the model clock's length (default: the model's, "
        "10; 0: the data's own time); stable-SDE records are labelled +spanT or +rawtime",
    )
    p.add_argument("--out", default="runs/generalization")
    p.add_argument("--table", default=None, help="only print the table of this results.json")
    a = p.parse_args(argv)
    if a.table:
        records = json.loads(Path(a.table).read_text())
        print(summarise(records)[0])
        return 0
    cfg = common.SuiteConfig(
        quick=a.quick, steps=a.steps, max_length=a.max_length, ncde_solver=a.ncde_solver,
        ncde_substeps=a.ncde_substeps, lsde_solver=a.lsde_solver, weight_decay=a.weight_decay,
        lsde_time_span=a.lsde_time_span, logsig_depth=a.ncde_logsig_depth,
    )  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    records = json.loads(path.read_text()) if path.exists() else []
    done = {_key(r) for r in records}
    model_of = {"digits": "node", "ode": "neural_ode", "latent": "LatentSDE"}
    plan = _plan(a)
    print(
        f"# generalization suite: {len(plan)} runs ({platform.machine()}, "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')})",
        flush=True,
    )
    for i, spec in enumerate(plan):
        if _spec_key(spec, model_of) in done:
            continue
        t = time.perf_counter()
        try:
            new = _execute(spec, cfg)
        except Exception as e:  # report, keep going: a failure is a result too
            new = []
            print(f"[{i + 1}/{len(plan)}] FAILED {spec}: {type(e).__name__}: {e}", flush=True)
        for r in new:
            r["suite_key"] = list(_spec_key(spec, model_of))
            r.setdefault("config", dataclasses.asdict(cfg))
            records.append(r)
            print(
                f"[{i + 1}/{len(plan)}] {r['problem']} {r['model']} {r['missing']:.0%} "
                f"{r['method']} seed {r['seed']}: {r['metric']} {_num(r['value'])}, NFE "
                f"{_num(r.get('nfe_per_prediction'))} ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        path.write_text(json.dumps(records, indent=1))
        # Every run compiles its own train step, and the compiled code of a finished run stays
        # mapped (about 1.3k memory maps per quick latent run): without this a long suite hit
        # the kernel's limit (vm.max_map_count, 65530) after ~40 runs and XLA aborted with
        # "LLVM ERROR: Unable to allocate section memory". No later run reuses it.
        jax.clear_caches()
    table, normalised = summarise(records)
    print()
    print(table)
    (out / "table.txt").write_text(table + "\n")
    if normalised:
        import ndes

        fig = ndes.plot.plot_tradeoff(
            normalised,
            out / "tradeoff.png",
            x="nfe_ratio",
            y="quality_change",
            title="generalization suite: NFE vs vanilla (x) and metric change (y, + better)",
        )
        print(f"figure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
