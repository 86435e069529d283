"""`ndes demo`: a neural-ODE classifier of handwritten digits trained three ways.

The data are scikit-learn's 8x8 digits (1797 images, 10 classes; `ndes.data.load_digits`,
a stratified 75/25 split standardised with train statistics). The model is

    x (64 pixels) -> linear encoder -> h(0) -> dh/dt = f(h), t in [0, 1] -> linear readout

with `f` a small MLP (`ndes.models.ODEClassifier`), solved jointly for the batch by
`ndes.NeuralODE` with Tsit5 and a `PIDController`, and trained on the cross-entropy
(`ndes.train.classification_loss`) with `ndes.fit`: once without regularization and once
with each global solver-heuristic regularizer (`ErrorEstimate`, `StiffnessEstimate`). The
table reports what matters: the test accuracy and what a prediction costs afterwards --
function evaluations of one image's own solve (each test image solved separately,
`batch_mode="vmap"`, *without* any regularizer) -- plus the time to train and to predict
the whole test set.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ndes
import ndes.data
from ndes.models import ODEClassifier
from ndes.train import classification_loss

__all__ = ["DemoConfig", "DemoResult", "run_demo", "format_table"]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. `quick()` is a seconds-long variant used by the tests."""

    steps: int = 1500
    batch: int = 128
    hidden: int = 16
    width: int = 32
    depth: int = 1
    lr: float = 1e-2
    rtol: float = 1e-6
    atol: float = 1e-6
    error_weight: float = 3.0
    stiffness_weight: float = 10.0
    eval_every: int = 150
    seed: int = 0
    seeds: int = 1

    @staticmethod
    def quick() -> "DemoConfig":
        return DemoConfig(steps=6, batch=16, hidden=4, width=8, eval_every=3)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    method: str
    seed: int
    test_accuracy: float  # percent
    nfe: float  # function evaluations per prediction (one image's own solve)
    train_s: float
    predict_s: float  # whole test set, compiled
    log_path: Path | None


def methods(cfg: DemoConfig) -> list[tuple[str, tuple]]:
    return [
        ("vanilla", ()),
        ("ErrorEstimate", (ndes.ErrorEstimate(cfg.error_weight),)),
        ("StiffnessEstimate", (ndes.StiffnessEstimate(cfg.stiffness_weight),)),
    ]


@eqx.filter_jit
def _evaluate(model, x, y):
    """Test metrics without regularizers, each image solved on its own; compiled once for
    every method (regularizers are not part of the model)."""
    logits, out = model.with_batch_mode("vmap")(x)
    pred = jnp.argmax(logits, -1)
    return {
        "loss": jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)),
        "accuracy": jnp.mean(pred == y) * 100.0,
        "num_fevals": jnp.mean(out.stats["num_fevals"]),
        "num_accepted_steps": jnp.mean(out.stats["num_accepted_steps"]),
        "num_rejected_steps": jnp.mean(out.stats["num_rejected_steps"]),
    }


def _write_jsonl(path: Path, records) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)


def _train_one(cfg, name, regs, seed, data, out_dir, progress) -> DemoResult:
    xtr, ytr, xte, yte = data
    model = ODEClassifier(
        xtr.shape[1],
        10,
        cfg.hidden,
        cfg.width,
        cfg.depth,
        key=jax.random.key(seed + 1),
        rtol=cfg.rtol,
        atol=cfg.atol,
    )
    run = name if cfg.seeds == 1 else f"{name}-seed{seed}"
    evals: dict[int, dict] = {}
    eval_s = [0.0]

    def evaluate(step, state, record):
        # Evaluation in a callback (not fit's eval_data) so that its compiled function is
        # shared by all methods; its time is left out of the training time.
        if step % cfg.eval_every == 0 or step == cfg.steps or step == 1:
            t = time.perf_counter()
            m = jax.device_get(_evaluate(state.model, xte, yte))
            evals[step] = {f"eval_{k}": float(v) for k, v in m.items()}
            eval_s[0] += time.perf_counter() - t

    t0 = time.perf_counter()
    result = ndes.fit(
        model,
        (xtr, ytr),
        classification_loss,
        optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.steps, alpha=0.05)),
        key=jax.random.key(seed),
        batch_size=cfg.batch,
        steps=cfg.steps,
        regularizers=regs,
        log_every=max(1, cfg.steps // 100),
        run_name=run,
        progress=progress,
        callbacks=[evaluate],
    )
    jax.block_until_ready(result.model)
    train_s = time.perf_counter() - t0 - eval_s[0]
    predict_s = float("inf")
    for _ in range(3):  # the best of 3 (the machine may be shared)
        t0 = time.perf_counter()
        final = jax.block_until_ready(_evaluate(result.model, xte, yte))
        predict_s = min(predict_s, time.perf_counter() - t0)
    log_path = None
    if out_dir is not None:
        records = [dict(r) for r in result.history]
        logged = {r["step"] for r in records}
        records += [{"step": s, "run": run} for s in evals if s not in logged]
        records.sort(key=lambda r: r["step"])
        for r in records:
            r.update(evals.get(r["step"], {}))
        log_path = Path(out_dir) / run / "metrics.jsonl"  # a run directory: `ndes plot OUT`
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _write_jsonl(log_path, records)
    return DemoResult(
        name,
        seed,
        float(final["accuracy"]),
        float(final["num_fevals"]),
        train_s,
        predict_s,
        log_path,
    )


def run_demo(
    cfg: DemoConfig = DemoConfig(),
    *,
    out_dir: str | Path | None = None,
    method_names: Sequence[str] | None = None,
    progress: bool | None = None,
) -> list[DemoResult]:
    """Train every method for `cfg.seeds` seeds (`cfg.seed`, `cfg.seed + 1`, ...).

    With `out_dir`, writes `<method>/metrics.jsonl` (`<method>-seed<k>/` for several seeds;
    `ndes plot OUT_DIR` redraws them), `results.json` and `demo.png` there.
    """
    xtr, ytr, xte, yte = ndes.data.load_digits(seed=cfg.seed)
    data = (xtr, ytr.astype(np.int32), xte, yte.astype(np.int32))
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        for name, regs in methods(cfg):
            if method_names is not None and name not in method_names:
                continue
            out.append(_train_one(cfg, name, regs, seed, data, out_dir, progress))
    if out_dir is not None:
        rows = [
            {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(r).items()}
            for r in out
        ]
        (Path(out_dir) / "results.json").write_text(
            json.dumps({"config": dataclasses.asdict(cfg), "results": rows}, indent=1)
        )
        plot_results(out, Path(out_dir) / "demo.png")
    return out


def plot_results(results: Sequence[DemoResult], path: Path) -> Path:
    """Test accuracy and NFE per prediction (no regularizer, one image per solve), training
    loss and training NFE (joint batch solve) against the step, one line per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    several = len({r.seed for r in results}) > 1
    panels = [
        ("eval_accuracy", "test accuracy (%)"),
        ("eval_num_fevals", "NFE per prediction (test, no regularizer)"),
        ("loss", "training cross-entropy"),
        ("num_fevals", "NFE per training solve (joint batch)"),
    ]
    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    colors = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(r.method for r in results))}
    acc_lo = 100.0
    for r in results:
        if r.log_path is None:
            continue
        recs = ndes.train.read_metrics(r.log_path)
        label = f"{r.method} (seed {r.seed})" if several else r.method
        for ax, (key, _) in zip(axes, panels, strict=True):
            pts = [(x["step"], x[key]) for x in recs if isinstance(x.get(key), (int, float))]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                ys,
                color=colors[r.method],
                label=label,
                alpha=0.6 if several else 1.0,
                marker="." if len(xs) < 30 else None,
            )
            if key == "eval_accuracy" and len(ys) > 2:
                acc_lo = min(acc_lo, *ys[len(ys) // 3 :])
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if acc_lo < 100.0:
        axes[0].set_ylim(max(0.0, acc_lo - 3.0), 100.0)
    axes[2].set_yscale("log")
    axes[1].legend(fontsize="small")
    fig.suptitle("ndes demo: neural-ODE digits classifier, vanilla vs. regularized")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _mean_std(xs: Sequence[float], fmt: str) -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    m = float(np.mean(xs))
    s = float(np.std(xs, ddof=1))
    return f"{format(m, fmt)} ± {format(s, fmt)}"


def format_table(results: Sequence[DemoResult]) -> str:
    """A plain-text table, one row per method (mean ± std over seeds when several)."""
    by_method: dict[str, list[DemoResult]] = {}
    for r in results:
        by_method.setdefault(r.method, []).append(r)
    head = (
        f"{'method':18} {'test acc %':>14} {'NFE/predict':>14} {'vs vanilla':>10} "
        f"{'train s':>12} {'predict ms':>12}"
    )
    lines = [head, "-" * len(head)]
    base = None
    for name, rs in by_method.items():
        nfe = float(np.mean([r.nfe for r in rs]))
        base = nfe if base is None else base
        ratio = nfe / base if base and math.isfinite(base) else float("nan")
        lines.append(
            f"{name:18} {_mean_std([r.test_accuracy for r in rs], '.2f'):>14} "
            f"{_mean_std([r.nfe for r in rs], '.1f'):>14} {ratio:10.2f} "
            f"{_mean_std([r.train_s for r in rs], '.1f'):>12} "
            f"{_mean_std([r.predict_s * 1e3 for r in rs], '.1f'):>12}"
        )
    return "\n".join(lines)
