"""Figures of training runs: metric histories, a run directory, and the cost/quality trade-off
of many runs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._figure import new_figure, save

__all__ = ["plot_history", "plot_run", "plot_tradeoff"]

_LABELS = {
    "loss": "training loss",
    "num_fevals": "NFE per solve",
    "penalty": "penalty",
    "eval_loss": "evaluation loss",
    "eval_num_fevals": "NFE per prediction",
    "accuracy": "accuracy",
    "eval_accuracy": "test accuracy",
    "nfe_per_prediction": "NFE per prediction",
    "train_s": "training time (s)",
}

_DEFAULT_RUN_KEYS = ("loss", "eval_loss", "num_fevals", "eval_num_fevals", "penalty")

Records = Sequence[Mapping[str, Any]]
Source = str | os.PathLike | Records


def _load(src: Source) -> list[Mapping[str, Any]]:
    if isinstance(src, (str, os.PathLike)):
        from ..train import read_metrics

        return read_metrics(src)
    return list(src)


def _label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    group, _, name = key.partition(".")
    if group == "budget_weights" and name:
        return f"weight of {name}"
    if group == "penalty_terms" and name:
        return f"{name} (unweighted)"
    return key


def _get(rec: Mapping[str, Any], key: str) -> Any:
    """`rec[key]`, where a dotted key such as `budget_weights.ErrorEstimate` reads a nested
    dict; `None` when missing or not a number."""
    val: Any = rec
    parts = (key,) if key in rec else key.split(".")
    for part in parts:
        if not isinstance(val, Mapping) or part not in val:
            return None
        val = val[part]
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        return None
    return val


def _runs(source: Any) -> dict[str, list[Mapping[str, Any]]]:
    """Normalise the accepted inputs to `{label: records}`."""
    if isinstance(source, Mapping):
        return {str(k): _load(v) for k, v in source.items()}
    if isinstance(source, (str, os.PathLike)):
        groups: dict[str, list] = {}
        for rec in _load(source):
            groups.setdefault(str(rec.get("run", Path(source).stem)), []).append(rec)
        return groups
    items = list(source)
    if items and all(isinstance(x, Mapping) for x in items):  # one list of records
        groups = {}
        for rec in items:
            groups.setdefault(str(rec.get("run", "run")), []).append(rec)
        return groups
    out: dict[str, list] = {}
    for i, x in enumerate(items):  # a list of files / record lists
        label = Path(x).stem if isinstance(x, (str, os.PathLike)) else f"run {i}"
        out[label] = _load(x)
    return out


def plot_history(
    source: Source | Mapping[str, Source] | Sequence[Source],
    path: str | os.PathLike,
    *,
    keys: Sequence[str] = ("loss", "num_fevals", "penalty"),
    logy: Sequence[str] = ("loss", "penalty", "eval_loss"),
    ylabels: Mapping[str, str] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Plot training metrics against the step, one line per run, and save a PNG.

    **Arguments:**

    - `source`: a metrics JSONL file written by `ndes.fit` (records with different
      `run` labels become different lines), a list of records (`FitResult.history`), a
      dict `{label: file or records}` (one line per label, e.g. one per method), or a list
      of files / record lists.
    - `path`: the output image (PNG); parent directories are created.
    - `keys`: the metrics to draw, one panel each (missing metrics are skipped per run;
      a panel no run has is left out). A dotted key reads a nested entry, e.g.
      `"budget_weights.ErrorEstimate"` or `"penalty_terms.StiffnessEstimate"`.
    - `logy`: metrics drawn on a logarithmic axis (when all their values are positive).
    - `ylabels`: y-axis labels by key, replacing the defaults (e.g.
      `{"loss": "NLL (nats)"}`); a key not drawn is an error.
    - `title`: optional figure title.
    - `dpi`: resolution.

    **Returns:** the path written.
    """
    runs = _runs(source)
    if not runs or not any(runs.values()):
        raise ValueError("plot_history: `source` holds no records to plot.")
    keys = [k for k in keys if any(_get(r, k) is not None for recs in runs.values() for r in recs)]
    if not keys:
        raise ValueError(
            "plot_history: none of the requested keys occur in the records; pass keys= naming "
            "logged metrics such as 'loss', 'num_fevals', 'penalty'."
        )
    ylabels = dict(ylabels or {})
    if unknown := sorted(set(ylabels) - set(keys)):
        raise ValueError(
            f"plot_history: ylabels names {unknown}, which are not drawn; the panels are "
            f"{keys} (keys that no record holds are left out)."
        )
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig = new_figure(4.2 * ncols, 3.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys, strict=False):
        positive = True
        for label, recs in runs.items():
            pts = [(r["step"], v) for r in recs if (v := _get(r, key)) is not None and "step" in r]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            positive &= min(ys) > 0
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabels.get(key, _label(key)))
        if key in logy and positive:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize="small")
    return save(fig, path, title, dpi)


def plot_run(
    run_dir: str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    keys: Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """Plot the metrics of a training run directory and save a PNG (what `ndes plot RUN_DIR`
    draws).

    **Arguments:**

    - `run_dir`: a directory written by `ndes.fit(..., run_dir=...)` (holding
      `metrics.jsonl`), or a directory whose subdirectories are such runs (one line per
      subdirectory, labelled by its name, e.g. one per method).
    - `path`: the output PNG; default `run_dir/history.png`.
    - `keys`: the metrics to draw; default the training and evaluation loss and NFE, the
      penalty and every adapted `BudgetWeight` that the records hold.
    - `kwargs`: passed to `plot_history` (`logy`, `ylabels`, `title`, `dpi`).

    **Returns:** the path written.

    Raises `FileNotFoundError` when `run_dir` holds no `metrics.jsonl` (neither directly
    nor in a subdirectory).
    """
    d = Path(run_dir)
    if (d / "metrics.jsonl").is_file():
        source: Any = d / "metrics.jsonl"
        runs = _runs(source)
    else:
        subs = (
            sorted(p for p in d.iterdir() if (p / "metrics.jsonl").is_file()) if d.is_dir() else []
        )
        if not subs:
            raise FileNotFoundError(
                f"plot_run: {d} holds no metrics.jsonl (nor do its subdirectories); pass the "
                "run_dir given to ndes.fit, or a directory of such runs."
            )
        source = {p.name: p / "metrics.jsonl" for p in subs}
        runs = _runs(source)
    if keys is None:
        weights = sorted(
            {
                f"budget_weights.{name}"
                for recs in runs.values()
                for r in recs
                for name in (r.get("budget_weights") or {})
            }
        )
        keys = [*_DEFAULT_RUN_KEYS, *weights]
    return plot_history(runs, d / "history.png" if path is None else path, keys=keys, **kwargs)


def plot_tradeoff(
    records: Records | str | os.PathLike,
    path: str | os.PathLike,
    *,
    x: str = "nfe_per_prediction",
    y: str = "accuracy",
    group: str = "method",
    panel: str | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Cost against quality, one point per run and a mean +- std cross per group: the figure
    for "does the regularizer buy a cheaper model at the same accuracy?".

    **Arguments:**

    - `records`: a list of flat result records (one per run, e.g. one per seed and method),
      or a JSON file holding such a list (as written by `examples/uea_classification.py`).
    - `path`: the output PNG; parent directories are created.
    - `x`, `y`: the record keys drawn on the axes (default NFE per prediction, accuracy).
    - `group`: the key whose values get one colour each (default `"method"`).
    - `panel`: optional key whose values get one panel each (e.g. `"missing"`).
    - `title`, `dpi`: figure title and resolution.

    **Returns:** the path written.

    Raises `ValueError` when no record holds numbers for both `x` and `y`.

    ```python
    import tempfile

    records = [
        {"method": "vanilla", "seed": 0, "accuracy": 0.95, "nfe_per_prediction": 310},
        {"method": "vanilla", "seed": 1, "accuracy": 0.94, "nfe_per_prediction": 320},
        {"method": "ErrorEstimate", "seed": 0, "accuracy": 0.95, "nfe_per_prediction": 210},
    ]
    path = ndes.plot.plot_tradeoff(records, f"{tempfile.mkdtemp()}/tradeoff.png")
    assert path.stat().st_size > 0
    ```
    """
    import json

    if isinstance(records, (str, os.PathLike)):
        records = json.loads(Path(records).read_text())
    recs = [r for r in records if _get(r, x) is not None and _get(r, y) is not None]
    if not recs:
        raise ValueError(
            f"plot_tradeoff: no record holds numbers for both x={x!r} and y={y!r}; pass the "
            "keys of your records (e.g. x='nfe_per_prediction', y='accuracy')."
        )
    panels = sorted({r.get(panel) for r in recs}, key=str) if panel else [None]
    groups = list(dict.fromkeys(str(r.get(group, "run")) for r in recs))
    fig = new_figure(4.6 * len(panels) + 2.6, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for ax, pv in zip(axes, panels, strict=True):
        for g, colour in zip(groups, colours, strict=True):
            pts = [
                (_get(r, x), _get(r, y))
                for r in recs
                if str(r.get(group, "run")) == g and (panel is None or r.get(panel) == pv)
            ]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=14, color=colour, alpha=0.45)
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            sx = (sum((v - mx) ** 2 for v in xs) / len(xs)) ** 0.5
            sy = (sum((v - my) ** 2 for v in ys) / len(ys)) ** 0.5
            ax.errorbar(
                mx,
                my,
                xerr=sx,
                yerr=sy,
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{g} (n={len(xs)})",
            )
        ax.set_xlabel(_label(x))
        ax.set_ylabel(_label(y))
        if panel is not None:
            ax.set_title(f"{panel} = {pv}")
        ax.grid(alpha=0.3)
    # One legend for all panels, outside them, so that it never hides a point.
    entries: dict[str, tuple] = {}  # group -> (handle, label) from the first panel holding it
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(lab.split(" (n=")[0], (h, lab))
    handles, labels = zip(*entries.values(), strict=True)
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return save(fig, path, title, dpi)
