"""ndes.plot: every figure function writes a PNG (Agg canvas, no display needed)."""

import json

import pytest

from ndes.plot import plot_history, plot_run

PNG = b"\x89PNG\r\n\x1a\n"


def _records(run=None, n=5, scale=1.0):
    out = []
    for s in range(1, n + 1):
        r = {
            "step": s,
            "loss": scale / s,
            "num_fevals": 20.0 + s,
            "penalty": 0.1 * s,
            "penalty_terms": {"ErrorEstimate": 0.01 * s},
            "budget_weights": {"ErrorEstimate": 0.05 * s},
            "wall_time": 0.1 * s,
        }
        if s == n:
            r["eval_loss"] = scale / n
            r["eval_num_fevals"] = 18.0
        if run is not None:
            r["run"] = run
        out.append(r)
    return out


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_plot_history_sources(tmp_path):
    # A list of records (FitResult.history).
    out = plot_history(_records(), tmp_path / "a" / "h.png", title="one run")
    assert out.read_bytes().startswith(PNG)
    # One JSONL file holding two runs (split by their "run" label), with a nested key.
    f = _write(tmp_path / "m.jsonl", _records("vanilla") + _records("reg", scale=0.5))
    out = plot_history(
        f,
        tmp_path / "b.png",
        keys=("loss", "budget_weights.ErrorEstimate", "penalty_terms.ErrorEstimate"),
    )
    assert out.read_bytes().startswith(PNG)
    # A dict label -> file / records, and a list of files.
    out = plot_history({"x": f, "y": _records()}, tmp_path / "c.png", keys=("eval_loss",))
    assert out.read_bytes().startswith(PNG)
    out = plot_history([f, _write(tmp_path / "n.jsonl", _records())], tmp_path / "d.png")
    assert out.read_bytes().startswith(PNG)
    # Nulls (NaN written by fit) and non-positive values on a log axis are tolerated.
    recs = _records()
    recs[1]["loss"] = None
    recs[2]["penalty"] = 0.0
    assert plot_history(recs, tmp_path / "e.png").read_bytes().startswith(PNG)


def test_plot_history_ylabels(tmp_path, monkeypatch):
    import ndes.plot._training as training

    seen = {}
    real_save = training.save

    def capture(fig, path, title, dpi):
        seen.update({ax.get_ylabel(): True for ax in fig.axes if ax.get_visible()})
        return real_save(fig, path, title, dpi)

    monkeypatch.setattr(training, "save", capture)
    plot_history(_records(), tmp_path / "y.png", ylabels={"loss": "NLL (nats)"})
    assert "NLL (nats)" in seen and training._label("loss") not in seen
    assert training._label("num_fevals") in seen  # the other panels keep their defaults
    with pytest.raises(ValueError, match="ylabels names \\['accuracy'\\]"):
        plot_history(_records(), tmp_path / "z.png", ylabels={"accuracy": "acc"})


def test_plot_history_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no records"):
        plot_history([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="none of the requested keys"):
        plot_history(_records(), tmp_path / "x.png", keys=("accuracy",))
    assert not (tmp_path / "x.png").exists()


def test_plot_run(tmp_path):
    run = tmp_path / "run"
    _write(run / "metrics.jsonl", _records())
    out = plot_run(run)
    assert out == run / "history.png" and out.read_bytes().startswith(PNG)
    # A directory of runs: one line per subdirectory.
    _write(tmp_path / "cmp" / "vanilla" / "metrics.jsonl", _records())
    _write(tmp_path / "cmp" / "error" / "metrics.jsonl", _records(scale=0.3))
    out = plot_run(tmp_path / "cmp", tmp_path / "cmp.png", keys=("loss", "num_fevals"))
    assert out.read_bytes().startswith(PNG)
    with pytest.raises(FileNotFoundError, match="holds no metrics.jsonl"):
        plot_run(tmp_path / "nothing")


def test_plot_fit_history(tmp_path):
    """The records that ndes.fit writes plot as they are."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from ndes.train import fit

    x = np.linspace(-1, 1, 16)[:, None]
    model = eqx.nn.MLP(1, 1, 4, 1, key=jax.random.key(0))

    def loss_fn(m, batch, *, key, regularizers, train_step):
        return jnp.mean((jax.vmap(m)(batch) - batch) ** 2), {"num_fevals": 3.0}

    fit(
        model,
        x,
        loss_fn,
        optax.adam(1e-2),
        key=jax.random.key(1),
        batch_size=8,
        steps=4,
        run_dir=tmp_path,
        progress=False,
    )
    assert plot_run(tmp_path).read_bytes().startswith(PNG)


def test_latent_sde_plots_write_pngs(tmp_path):
    import numpy as np

    import ndes

    ts = np.linspace(0.0, 1.0, 20)
    values = np.sin(ts)
    values[::3] = np.nan  # missing observations are not drawn
    samples = np.sin(ts)[None] + 0.1 * np.random.default_rng(0).normal(size=(16, 20))
    fig = ndes.plot.plot_posterior_and_forecast(
        tmp_path / "post.png", ts, values, ts, samples, ts + 1.0, samples, ts[-3:], values[-3:]
    )
    assert (tmp_path / "post.png").stat().st_size > 1000
    assert fig.axes
    fig = ndes.plot.plot_training(
        tmp_path / "train.png", [np.arange(10.0)] * 2, [np.arange(10.0)] * 2, ("a", "b")
    )
    assert (tmp_path / "train.png").stat().st_size > 1000


def test_plot_tradeoff_records_file_and_panels(tmp_path):
    from ndes.plot import plot_tradeoff

    recs = [
        {"method": m, "missing": miss, "seed": s, "accuracy": a + 0.01 * s, "nfe_per_prediction": n}
        for m, a, n in (("vanilla", 0.95, 270), ("error(0.01)", 0.96, 190))
        for miss in (0.0, 0.3)
        for s in range(3)
    ]
    out = plot_tradeoff(recs, tmp_path / "a" / "t.png", panel="missing", title="JV")
    assert out.read_bytes()[:8] == PNG
    f = tmp_path / "results.json"
    f.write_text(json.dumps(recs))
    assert plot_tradeoff(f, tmp_path / "b.png").read_bytes()[:8] == PNG


def test_plot_tradeoff_needs_numbers():
    from ndes.plot import plot_tradeoff

    with pytest.raises(ValueError, match="x='train_s'"):
        plot_tradeoff([{"accuracy": 0.9}], "unused.png", x="train_s")
