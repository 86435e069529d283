"""`ndes train`'s configuration: the schema's errors name the key, defaults, the shipped
example configs, the job builders and the docs page that lists every key."""

import json
from pathlib import Path

import pytest

from ndes.cli import ConfigError, load_config, parse_config
from ndes.cli._jobs import DATA_BUILDERS, MODEL_BUILDERS, build_job, build_regularizer
from ndes.cli._schema import DATA_SPECS, MODEL_SPECS, REGULARIZER_SPECS, OptimizerSpec

ROOT = Path(__file__).resolve().parents[1]


# ---- ndes train: config validation ---------------------------------------------------------

_BASE = {
    "steps": 4,
    "data": {"name": "digits"},
    "model": {"type": "neural_ode", "width": 8},
    "regularizers": [{"type": "ErrorEstimate", "weight": 1.0}],
}


def _with(**changes):
    cfg = json.loads(json.dumps(_BASE))
    for dotted, val in changes.items():
        *path, last = dotted.split("__")
        d = cfg
        for p in path:
            d = d[int(p)] if isinstance(d, list) else d[p]
        d[last] = val
    return cfg


@pytest.mark.parametrize(
    "raw, match",
    [
        (_with(model__widht=8), r"config key 'model.widht' is unknown; known keys .*width"),
        (_with(stepz=3), r"config key 'stepz' is unknown"),
        (_with(model__width="wide"), r"config key 'model.width' must be a positive integer"),
        (_with(model__width=0), r"config key 'model.width' must be a positive integer"),
        (_with(steps=True), r"config key 'steps' must be a positive integer"),
        (_with(optimizer={"lr": -1.0}), r"config key 'optimizer.lr' must be a positive number"),
        (_with(model__solver="RK4"), r"config key 'model.solver' must be one of"),
        (_with(data__name="mnist"), r"config key 'data.name' = 'mnist' is not supported"),
        (
            _with(regularizers__0__type="Magic"),
            r"config key 'regularizers\[0\].type' = 'Magic' is not supported; choose one of: "
            r"ErrorEstimate",
        ),
        (
            _with(regularizers__0__weight="big"),
            r"config key 'regularizers\[0\].weight' must be a non-negative number",
        ),
        (_with(regularizers__0__rtl=1e-3), r"config key 'regularizers\[0\].rtl' is unknown"),
        (
            _with(regularizers=[{"type": "KineticEnergy"}]),
            r"'regularizers\[0\].weight' or 'regularizers\[0\].target_nfe' is needed",
        ),
        ({k: v for k, v in _BASE.items() if k != "steps"}, r"config key 'steps' is required"),
        (
            _with(model__type="neural_cde"),
            r"'data.name' = 'digits' is not supported with "
            r"model.type = 'neural_cde'",
        ),
        (
            _with(data={"name": "uea"}, model={"type": "stable_sde", "num_steps": 8}),
            r"'model.num_steps' applies only to model.solver = 'Euler'; ShARK is adaptive",
        ),
        (
            _with(data={"name": "uea"}, model={"type": "stable_sde", "kind": "gsde"}),
            r"'ShARK' needs additive noise \(model.kind = 'lsde'\)",
        ),
        (
            _with(
                data={"name": "uea"},
                model={"type": "stable_sde", "solver": "Euler", "num_steps": 8},
            ),
            r"'regularizers\[0\].type' = 'ErrorEstimate' needs a solver with an error estimate",
        ),
        (
            _with(data={"name": "uea"}, model={"type": "stable_sde", "activation": "tanh"}),
            r"config key 'model.activation' is unknown",
        ),
        (
            _with(data={"name": "uea"}, model={"type": "stable_sde", "time_span": -1}),
            r"config key 'model.time_span' must be a non-negative number",
        ),
        (
            _with(data={"name": "uea", "max_length": 1}, model={"type": "neural_cde"}),
            r"config key 'data.max_length' must be an integer >= 2",
        ),
        (
            _with(regularizers=[{"type": "CNFKineticEnergy", "weight": 0.1}]),
            r"'regularizers\[0\].type' = 'CNFKineticEnergy' reads a CNF's divergence "
            r"computation and needs model.type = 'cnf'; .* use 'KineticEnergy'",
        ),
        (
            _with(data={"name": "toy_2d"}),
            r"'data.name' = 'toy_2d' is not supported with model.type = 'neural_ode'",
        ),
        (
            _with(data={"name": "digits"}, model={"type": "cnf"}),
            r"'data.name' = 'digits' is not supported with model.type = 'cnf'; use one of: "
            r"toy_2d, digits_density",
        ),
        (
            _with(data={"name": "toy_2d", "shape": "circles"}, model={"type": "cnf"}),
            r"config key 'data.shape' must be one of",
        ),
        (
            _with(data={"name": "digits_density", "alpha": 0.5}, model={"type": "cnf"}),
            r"config key 'data.alpha' must be a positive number below 0.5",
        ),
        (
            _with(model={"type": "cnf", "divergence": "trace"}),
            r"config key 'model.divergence' must be one of",
        ),
        (
            _with(data={"name": "toy_2d"}, model={"type": "diffusion"}),
            r"config key 'model.flow_samples' must be > 0 with regularizers on a diffusion model",
        ),
        (
            _with(data={"name": "toy_2d"}, model={"type": "diffusion", "sde": "subvp"}),
            r"config key 'model.sde' must be one of",
        ),
        (
            _with(data={"name": "digits"}, model={"type": "diffusion"}, regularizers=[]),
            r"'data.name' = 'digits' is not supported with model.type = 'diffusion'",
        ),
    ],
)
def test_config_validation_names_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


@pytest.mark.parametrize(
    "raw, match",
    [
        (_with(data=3), r"config key 'data' must be a table; got 3 \(int\)"),
        (_with(data={"test_fraction": 0.5}), r"'data.name' is required; one of digits, spirals"),
        (
            _with(regularizers={"type": "ErrorEstimate"}),
            r"config key 'regularizers' must be an array of tables \(\[\[regularizers\]\]",
        ),
        (_with(regularizers=[{"weight": 1.0}]), r"'regularizers\[0\].type' is required"),
        (
            _with(
                regularizers=[
                    {"type": "ErrorEstimate", "weight": 1.0},
                    {"type": "KineticEnergy", "weight": -1},
                ]
            ),
            r"config key 'regularizers\[1\].weight' must be a non-negative number; got -1 \(int\)",
        ),
        (_with(seed=-1), r"config key 'seed' must be an integer >= 0"),
        (
            _with(optimizer={"lr": float("inf")}),
            r"'optimizer.lr' must be a positive number; got inf",
        ),
        (
            _with(optimizer={"momentum": 1.0}),
            r"'optimizer.momentum' must be a non-negative number below 1",
        ),
        (
            _with(data={"name": "spirals", "num_times": 1}),
            r"'data.num_times' must be an integer >= 2",
        ),
        (_with(run_dir=""), r"config key 'run_dir' must be a non-empty string"),
        (
            _with(model__solver="Euler"),
            r"config key 'model.dt0' is required with model.solver = 'Euler'",
        ),
        (
            _with(data={"name": "spirals"}, model={"hidden": 8}),
            r"config key 'model.hidden' applies only to classification",
        ),
        (
            _with(nfe_budget=30.0, regularizers=[{"type": "ErrorEstimate", "target": 0.5}]),
            r"'nfe_budget' needs at least one regularizer with a numeric weight",
        ),
        (
            _with(model__type="ode"),
            r"'model.type' = 'ode' is not supported; choose one of: neural_ode, neural_cde, "
            r"stable_sde",
        ),
        (_with(stepz=3), r"known keys in the top level: seed, steps, .*regularizers\."),
    ],
)
def test_config_more_errors_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_config_defaults_and_example_configs():
    cfg = parse_config(_BASE)
    assert cfg.batch_size == 64 and cfg.seed == 0 and cfg.model.rtol == 1e-3
    assert cfg.optimizer.model_dump() == {
        "type": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.0,
        "schedule": "constant",
        "clip_norm": None,
    }
    assert isinstance(parse_config(_with(optimizer={"lr": 1})).optimizer.lr, float)
    assert parse_config(_with(model={})).model.type == "neural_ode"  # the default type
    examples = sorted((ROOT / "examples" / "configs").glob("*.toml"))
    assert len(examples) >= 2
    for path in examples:
        load_config(path)  # every shipped example is valid


_ERR = [{"type": "ErrorEstimate", "weight": 0.01, "rtol": 1e-2, "atol": 1e-4}]


@pytest.mark.parametrize(
    "model, regs",
    [
        # ShARK with ErrorEstimate: ~30 s of compilation, run by `make test-slow`.
        pytest.param(
            {"type": "stable_sde", "width": 8, "hidden": 4, "depth": 1},
            _ERR,
            marks=pytest.mark.slow,
        ),
        (
            {
                "type": "stable_sde",
                "width": 8,
                "hidden": 4,
                "depth": 1,
                "kind": "lnsde",
                "solver": "Euler",  # no num_steps: one step per observation interval
            },
            [],
        ),
    ],
    ids=["lsde-shark", "lnsde-euler"],
)
def test_stable_sde_job_trains_a_step_on_uea(model, regs):
    import jax
    import numpy as np

    import ndes

    raw = {
        "steps": 1,
        "batch_size": 8,
        "data": {"name": "uea", "dataset": "JapaneseVowels", "missing": 0.3},
        "model": model,
        "regularizers": regs,
    }
    if model.get("solver") == "Euler":
        raw["data"]["max_length"] = 16  # length 29 -> every 2nd point, 15 points
    job = build_job(parse_config(raw))
    assert "stable neural SDE" in job.description and "clock [0, 10]" in job.description
    assert job.model.sde.time_span == 10.0  # the models' default clock
    res = ndes.fit(
        job.model,
        job.data,
        job.loss_fn,
        job.optimizer,
        key=jax.random.key(0),
        batch_size=8,
        steps=1,
        regularizers=job.regularizers,
        progress=False,
    )
    (rec,) = res.history
    assert np.isfinite(rec["loss"]) and rec["num_fevals"] > 0
    if model.get("solver") == "Euler":  # drift + diffusion once per interval of the grid
        assert np.shape(job.data[0])[-1] == 15 and "one point in 2" in job.description
        assert rec["num_fevals"] == 2 * (15 - 1)  # data[0]: times
    if regs:
        assert rec["penalty_terms"]["ErrorEstimate"] > 0


def test_config_budget_keys_build_a_budget_weight():
    import ndes

    cfg = parse_config(
        _with(regularizers=[{"type": "ErrorEstimate", "target": 0.5, "budget_warmup": 20}])
    )
    reg = build_regularizer(cfg.regularizers[0], 0)
    assert isinstance(reg.weight, ndes.BudgetWeight)
    assert reg.weight.target == 0.5 and reg.weight.warmup_steps == 20 and reg.weight.init is None
    both = parse_config(
        _with(regularizers=[{"type": "ErrorEstimate", "target": 0.5, "target_nfe": 40}])
    )
    with pytest.raises(ConfigError, match=r"regularizers\[0\].*exactly one of target="):
        build_regularizer(both.regularizers[0], 0)


def test_config_uea_dataset_is_any_set_aeon_ships():
    pytest.importorskip("aeon")
    cfg = parse_config(
        _with(
            data={"name": "uea", "dataset": "PickupGestureWiimoteZ"}, model={"type": "neural_cde"}
        )
    )
    assert cfg.data.dataset == "PickupGestureWiimoteZ" and cfg.data.max_length is None
    sub = _with(data={"name": "uea", "max_length": 64}, model={"type": "neural_cde"})
    assert parse_config(sub).data.max_length == 64
    with pytest.raises(
        ConfigError, match=r"'data.dataset' must be a classification set aeon ships"
    ):
        parse_config(_with(data={"name": "uea", "dataset": "Nope"}, model={"type": "neural_cde"}))


def test_docs_list_every_config_key():
    """docs/training.md is the reference of the keys: every schema key and choice is there."""
    from ndes.cli._config import TrainConfig

    docs = (ROOT / "docs" / "training.md").read_text()
    section = docs[docs.index("### `ndes train CONFIG.toml`") : docs.index("### `ndes plot")]
    specs = (TrainConfig, OptimizerSpec, *DATA_SPECS, *MODEL_SPECS, *REGULARIZER_SPECS)
    missing = [
        f"{spec.__name__}.{k}"
        for spec in specs
        for k in spec.model_fields
        if not any(f"`{form}`" in section for form in (k, f"[{k}]", f"[[{k}]]"))
    ]
    assert not missing, f"docs/training.md does not list: {missing}"
    for spec in (*DATA_SPECS, *MODEL_SPECS, *REGULARIZER_SPECS):
        tag = "name" if "name" in spec.model_fields else "type"
        (value,) = spec.model_fields[tag].annotation.__args__
        assert f"`{value}`" in section or f'"{value}"' in section, value


def test_job_builders_cover_the_schema():
    assert set(DATA_BUILDERS) == {s.model_fields["name"].annotation.__args__[0] for s in DATA_SPECS}
    assert set(MODEL_BUILDERS) == {
        s.model_fields["type"].annotation.__args__[0] for s in MODEL_SPECS
    }


def test_sampling_regularizers_get_a_key_and_the_class_defaults():
    import jax

    import ndes

    cfg = parse_config(
        _with(
            regularizers=[
                {"type": "LocalErrorEstimate", "weight": 0.1},
                {"type": "JacobianFrobenius", "weight": 0.1, "probe": "rademacher"},
                {"type": "StiffnessEstimate", "weight": 0.1},
            ]
        )
    )
    local, jac, stiff = (build_regularizer(r, i) for i, r in enumerate(cfg.regularizers))
    assert isinstance(local, ndes.LocalErrorEstimate) and local.weight == 0.1
    assert (
        jax.random.key_data(local.key).tolist() == jax.random.key_data(jax.random.key(0)).tolist()
    )
    assert jac.probe == "rademacher" and jac.key is not None
    assert stiff.aggregate == ndes.StiffnessEstimate().aggregate  # left out: the class's own


def _tiny_cnf_run(tmp_path, name, overrides, model_overrides):
    import tomllib

    from ndes.cli import main

    raw = tomllib.loads((ROOT / "examples" / "configs" / name).read_text())
    assert load_config(ROOT / "examples" / "configs" / name).model.type in ("cnf", "diffusion")
    raw.update(steps=2, log_every=1, **overrides)
    raw.pop("eval_every", None)  # evaluated once, at the end
    raw.pop("checkpoint_every", None)
    raw["model"].update(model_overrides)
    lines = []
    for k, v in raw.items():
        if not isinstance(v, dict | list):
            lines.append(f"{k} = {json.dumps(v)}")
    for table in ("data", "model", "optimizer"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in raw[table].items()]
    for r in raw.get("regularizers", []):
        lines.append("[[regularizers]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in r.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, recs


@pytest.mark.slow  # compile + 2 steps + the density grid: ~40 s on the shared 2-core CPU
def test_cnf_8gaussians_config_trains_and_plots(tmp_path):
    import numpy as np

    run, recs = _tiny_cnf_run(
        tmp_path, "cnf_8gaussians.toml", {"batch_size": 64, "eval_batch_size": 64}, {"width": 8}
    )
    assert [r["step"] for r in recs if "loss" in r][:2] == [1, 2]
    assert np.isfinite(recs[-1]["loss"]) and recs[-1]["num_fevals"] > 0
    assert set(recs[0]["penalty_terms"]) == {"CNFKineticEnergy", "CNFJacobianFrobenius"}
    assert (run / "density.png").stat().st_size > 0 and (run / "history.png").is_file()


@pytest.mark.slow  # 64-d: compile + 2 steps + evaluation + 64 samples: ~60 s
def test_cnf_digits_config_trains_and_plots(tmp_path):
    import math

    import numpy as np

    run, recs = _tiny_cnf_run(tmp_path, "cnf_digits.toml", {"batch_size": 32}, {"width": 8})
    last = recs[-1]
    assert np.isfinite(last["loss"]) and 0 < last["bits_per_dim"] < 20
    np.testing.assert_allclose(last["loss"], last["nll"] / (64 * math.log(2)), rtol=1e-5)
    assert "eval_bits_per_dim" in last
    assert (run / "samples.png").stat().st_size > 0


@pytest.mark.slow  # compile + 2 DSM steps + DPM-Solver samples: ~20 s on the shared CPU
@pytest.mark.parametrize(
    "name, overrides",
    [
        ("diffusion_8gaussians.toml", {"batch_size": 64, "eval_batch_size": 64}),
        ("diffusion_digits.toml", {"batch_size": 32}),
    ],
)
def test_diffusion_configs_train_and_plot(tmp_path, name, overrides):
    import numpy as np

    run, recs = _tiny_cnf_run(tmp_path, name, overrides, {"width": 8})
    assert [r["step"] for r in recs if "loss" in r][:2] == [1, 2]
    assert np.isfinite(recs[-1]["loss"]) and "eval_loss" in recs[-1]
    assert (run / "samples.png").stat().st_size > 0 and (run / "history.png").is_file()


def test_stable_sde_time_span_zero_is_the_data_clock():
    raw = {
        "steps": 1,
        "data": {"name": "uea", "dataset": "JapaneseVowels"},
        "model": {"type": "stable_sde", "solver": "Euler", "time_span": 0, "hidden": 4},
    }
    job = build_job(parse_config(raw))
    assert job.model.sde.time_span is None and "the data's clock" in job.description
