"""The command line and the benchmark scripts run (their output is checked, not timings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ndes.cli import main
from ndes.cli._demo import DemoResult, format_table
from ndes.train import list_checkpoints, read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("cmd", [[], ["demo"], ["info"], ["train"], ["plot"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: ndes" in capsys.readouterr().out


def test_unknown_command_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train-everything"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "diffrax" in out and "device: cpu" in out


def test_demo_quick_prints_table_and_writes_figure(tmp_path):
    out = tmp_path / "demo"
    r = _run("-m", "ndes.cli", "demo", "--quick", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for word in (
        "vanilla",
        "ErrorEstimate",
        "StiffnessEstimate",
        "test acc",
        "NFE/predict",
        "train s",
        "predict ms",
    ):
        assert word in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(("vanilla", "Error", "Stiff"))]
    assert len(rows) == 3
    assert "nan" not in r.stdout.lower()
    assert (out / "demo.png").stat().st_size > 10_000
    for m in ("vanilla", "ErrorEstimate", "StiffnessEstimate"):
        recs = read_metrics(out / m / "metrics.jsonl")
        assert any("eval_accuracy" in rec and "eval_num_fevals" in rec for rec in recs)
        assert any("loss" in rec and "num_fevals" in rec for rec in recs)
    results = json.loads((out / "results.json").read_text())["results"]
    assert [x["method"] for x in results] == ["vanilla", "ErrorEstimate", "StiffnessEstimate"]
    # `ndes plot` redraws the three runs of the demo directory.
    assert main(["plot", str(out), "-o", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").stat().st_size > 10_000


def test_demo_table_mean_std_over_seeds():
    rows = [
        DemoResult(m, seed, acc, nfe, 10.0 + seed, 0.002, None)
        for seed in (0, 1, 2)
        for m, acc, nfe in (
            ("vanilla", 96.0 + seed, 40.0 + 2 * seed),
            ("ErrorEstimate", 95.0 + seed, 20.0 + seed),
        )
    ]
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, one row per method
    assert lines[2].split()[:4] == ["vanilla", "97.00", "±", "1.00"]
    assert "21.0 ± 1.0" in lines[3] and "0.50" in lines[3]  # NFE ratio of the means
    assert format_table(rows[:2]).splitlines()[2].split()[1] == "96.00"  # one seed: no ±


def test_train_bad_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('steps = 4\n[data]\nname = "digits"\n[model]\nwidht = 3\n')
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("ndes train: error: config key 'model.widht' is unknown")
    path.write_text("steps = [\n")
    assert main(["train", str(path)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- ndes train / plot: running --------------------------------------------------------

_TINY = """
steps = {steps}
batch_size = 16
checkpoint_every = 2
eval_every = 2

[data]
name = "ornstein_uhlenbeck"
num_train = 32
num_test = 16
num_times = 4

[model]
width = 4

[[regularizers]]
type = "ErrorEstimate"
weight = 0.1
"""


def test_train_writes_metrics_and_checkpoints_then_resumes_and_plots(tmp_path, capsys):
    cfg, run = tmp_path / "tiny.toml", tmp_path / "run"
    cfg.write_text(_TINY.format(steps=4))
    args = ["train", str(cfg), "--run-dir", str(run), "--no-progress", "--no-plot"]
    assert main(args) == 0, capsys.readouterr().err
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert "eval_loss" in recs[1] and recs[-1]["penalty_terms"]["ErrorEstimate"] > 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 4]
    assert (run / "config.toml").exists()
    # Without --resume an existing run is refused (exit 2, with a hint).
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume continues to the new total.
    cfg.write_text(_TINY.format(steps=6))
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in list_checkpoints(run / "checkpoints")][-1] == 6
    # ndes plot redraws the figure from the metrics.
    png = tmp_path / "fig.png"
    assert main(["plot", str(run), "-o", str(png)]) == 0
    assert png.stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_train_ctrl_c_checkpoints_and_exits_130(tmp_path, capsys, monkeypatch):
    import ndes

    cfg, run = tmp_path / "tiny.toml", tmp_path / "run"
    cfg.write_text(_TINY.format(steps=50))
    real_fit = ndes.fit

    def interrupting_fit(*a, **kw):
        def stop(step, state, record):
            if step == 3:
                raise KeyboardInterrupt

        return real_fit(*a, **{**kw, "callbacks": [stop]})

    monkeypatch.setattr(ndes, "fit", interrupting_fit)
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress", "--no-plot"]) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 3" in err and "--resume" in err
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 3]


def test_train_non_finite_step_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    import ndes

    cfg, run = tmp_path / "tiny.toml", tmp_path / "run"
    cfg.write_text(_TINY.format(steps=5))

    def nan_fit(*a, **kw):
        e = FloatingPointError("fit: the loss is nan at step 3.")
        e.add_note("The last good checkpoint is step_000000002.json.")
        raise e

    monkeypatch.setattr(ndes, "fit", nan_fit)
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert "error: fit: the loss is nan at step 3." in err
    assert "step_000000002.json" in err and "--resume" in err
    assert "Traceback" not in err


# Slow (80-160 s of compilation on 2 cores): kept out of `make test` for the CI budget;
# `make test-slow` runs it.
@pytest.mark.slow
def test_overhead_benchmark_quick():
    r = _run("benchmarks/overhead.py", "--quick")
    assert r.returncode == 0, r.stderr
    assert "identical step counts ndes vs diffrax: True" in r.stdout
    assert r.stdout.count("ndes + ErrorEstimate") == 2  # vmap and joint
