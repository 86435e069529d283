"""The `ndes` argument parser and its commands (exit codes: see `ndes.cli`)."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from pathlib import Path


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"ndes {command}: error: {message}", file=sys.stderr)
    return code


def _cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    import jax

    print(f"ndes {md.version('ndes')}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    for pkg in ("jax", "jaxlib", "equinox", "diffrax", "optax", "jaxtyping", "numpy"):
        try:
            print(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"{pkg} (not installed)")
    print(f"default backend: {jax.default_backend()}")
    for d in jax.devices():
        print(f"device: {d.platform} {d.device_kind} (id {d.id})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from ._demo import DemoConfig, format_table, run_demo

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    if args.full:
        cfg = dataclasses.replace(cfg, seeds=3)
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    for k, v in overrides.items():
        if v < (1 if k == "steps" else 0):
            return _fail("demo", f"--{k} must be {'positive' if k == 'steps' else '>= 0'}.")
    cfg = dataclasses.replace(cfg, **overrides)
    if cfg.eval_every > cfg.steps:
        cfg = dataclasses.replace(cfg, eval_every=cfg.steps)
    seeds = "1 seed" if cfg.seeds == 1 else f"{cfg.seeds} seeds (mean ± std)"
    print(
        "ndes demo: neural-ODE classifier of scikit-learn's 8x8 digits "
        f"(linear 64->{cfg.hidden}, dh/dt = MLP {cfg.hidden}-{cfg.width}x{cfg.depth}-"
        f"{cfg.hidden} on t in [0, 1], linear ->10), Tsit5 with PIDController(rtol={cfg.rtol}, "
        f"atol={cfg.atol}); {cfg.steps} Adam steps (cosine-decayed lr {cfg.lr}) of batch "
        f"{cfg.batch} per method, {seeds}; ErrorEstimate weight {cfg.error_weight}, "
        f"StiffnessEstimate weight {cfg.stiffness_weight}. "
        "Test metrics without regularizers, each image solved on its own."
    )
    t0 = time.perf_counter()
    results = run_demo(cfg, out_dir=args.out, progress=False if args.no_progress else None)
    print(format_table(results))
    out = Path(args.out)
    print(
        f"figure: {out / 'demo.png'}; metrics: {out}/<method>/metrics.jsonl; table: "
        f"{out / 'results.json'} ({time.perf_counter() - t0:.0f} s in all)"
    )
    return 0


def _summary(record: dict) -> str:
    parts = [f"step {record.get('step')}"]
    for k in ("loss", "accuracy", "num_fevals", "eval_loss", "eval_accuracy", "eval_num_fevals"):
        if isinstance(record.get(k), (int, float)):
            parts.append(f"{k} {record[k]:.4g}")
    return ", ".join(parts)


def _cmd_train(args: argparse.Namespace) -> int:
    import warnings

    import equinox as eqx

    from ._config import ConfigError, load_config
    from ._jobs import build_job

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return _fail("train", str(e))
    run_dir = Path(args.run_dir or cfg.run_dir or Path("runs") / Path(args.config).stem)
    try:
        import ndes
        from ndes.train import CheckpointError, latest_checkpoint

        print(f"ndes train: {args.config} -> {run_dir}", flush=True)
        try:
            job = build_job(cfg)
        except ConfigError as e:
            return _fail("train", str(e))
        regs = ", ".join(_regularizer_label(r) for r in cfg.regularizers) or "none"
        print(
            f"  {job.description}; regularizers: {regs}; {cfg.steps} steps of batch "
            f"{cfg.batch_size}",
            flush=True,
        )
        if run_dir.exists() and not run_dir.is_dir():
            return _fail("train", f"run directory {run_dir} is a file; pass --run-dir NEW_DIR.")
        if args.resume and latest_checkpoint(run_dir / "checkpoints") is None:
            print(
                f"ndes train: no checkpoint in {run_dir}; training starts fresh.",
                file=sys.stderr,
                flush=True,
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.source is not None and not (run_dir / "config.toml").exists():
            (run_dir / "config.toml").write_bytes(Path(cfg.source).read_bytes())
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="fit interrupted")
                result = ndes.fit(
                    job.model,
                    job.data,
                    job.loss_fn,
                    job.optimizer,
                    key=_key(cfg.seed),
                    batch_size=cfg.batch_size,
                    steps=cfg.steps,
                    regularizers=job.regularizers,
                    nfe_budget=cfg.nfe_budget,
                    budget_lr=cfg.budget_lr,
                    eval_data=job.eval_data,
                    eval_every=cfg.eval_every,
                    eval_batch_size=cfg.eval_batch_size,
                    log_every=cfg.log_every,
                    run_dir=run_dir,
                    run_name=Path(args.config).stem,
                    checkpoint_every=cfg.checkpoint_every,
                    keep_last=cfg.keep_last,
                    resume=args.resume,
                    progress=False if args.no_progress else None,
                )
        except FileExistsError as e:
            return _fail("train", f"{e} (ndes train: add --resume, or pass --run-dir NEW_DIR)")
        except CheckpointError as e:
            return _fail("train", str(e), code=1)
        except (FloatingPointError, eqx.EquinoxRuntimeError) as e:
            # fit stopped on a non-finite step or a failed solve and kept the last good
            # checkpoint; its note names it (docs/reliability.md).
            notes = " ".join(getattr(e, "__notes__", ()))
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return _fail(
                "train",
                f"{first} {notes} Continue from the last good checkpoint with --resume "
                "(after fixing the cause), or set on_nonfinite in fit.".replace("  ", " "),
                code=1,
            )
    except KeyboardInterrupt:
        print("ndes train: interrupted before training began; nothing saved.", file=sys.stderr)
        return 130
    if result.interrupted:
        print(
            f"ndes train: interrupted at step {int(result.state.step)}; checkpoint "
            f"{result.checkpoint}. Continue with: ndes train {args.config} --resume"
            + (f" --run-dir {args.run_dir}" if args.run_dir else ""),
            file=sys.stderr,
        )
        return 130
    if result.history:
        print(f"  done: {_summary(result.history[-1])}")
    print(f"  metrics {result.log_path}; checkpoint {result.checkpoint}")
    if not args.no_plot and result.history:
        png = ndes.plot.plot_run(run_dir)
        print(f"  figure {png}")
        for png in job.figures(result.model, run_dir) if job.figures else ():
            print(f"  figure {png}")
    return 0


def _regularizer_label(r) -> str:
    """`ErrorEstimate(0.01)`, `ErrorEstimate(target_nfe=40)` or `...(target=0.5)`."""
    if r.target_nfe is not None:
        return f"{r.type}(target_nfe={r.target_nfe})"
    if r.target is not None:
        return f"{r.type}(target={r.target})"
    return f"{r.type}({r.weight})"


def _key(seed: int):
    import jax

    return jax.random.key(seed)


def _cmd_plot(args: argparse.Namespace) -> int:
    from ..plot import plot_run

    keys = args.keys.split(",") if args.keys else None
    try:
        out = plot_run(args.run_dir, args.output, keys=keys)
    except (FileNotFoundError, ValueError) as e:
        return _fail("plot", str(e))
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ndes", description="Neural differential equations that learn to be cheap to solve."
    )
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a neural-ODE digits classifier vanilla / ErrorEstimate / StiffnessEstimate; "
        "print a table and draw a figure",
        description="Train a neural-ODE classifier of scikit-learn's digits three ways (no "
        "regularizer, ErrorEstimate, StiffnessEstimate) with ndes.fit; print test accuracy, "
        "NFE per prediction, train and predict time; write demo.png, <method>/metrics.jsonl "
        "and results.json to --out.",
    )
    demo.add_argument("--quick", action="store_true", help="a seconds-long variant (tests)")
    demo.add_argument(
        "--full",
        action="store_true",
        help="3 seeds; the table shows mean ± std (with --quick: tiny runs)",
    )
    demo.add_argument("--steps", type=int, default=None, help="training steps per method")
    demo.add_argument("--seed", type=int, default=None, help="random seed (the first of --full)")
    demo.add_argument("--out", default="ndes-demo", help="output directory (default ./ndes-demo)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser(
        "train",
        help="train from a TOML config (model, data, regularizers, optimiser, steps)",
        description="Train the model/data/regularizer combination of a TOML config with "
        "ndes.fit, writing metrics.jsonl, checkpoints/ and history.png to the run directory. "
        "Ctrl-C saves a checkpoint (exit code 130); --resume continues it. See "
        "docs/training.md for every config key.",
    )
    train.add_argument("config", help="the TOML config file")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in the run directory",
    )
    train.add_argument(
        "--run-dir",
        default=None,
        help="run directory (default: the config's run_dir, else runs/<config name>)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-plot", action="store_true", help="do not draw history.png at the end")
    train.set_defaults(func=_cmd_train)

    plot = sub.add_parser(
        "plot",
        help="redraw the figures of a run directory from its metrics",
        description="Draw the training curves of RUN_DIR/metrics.jsonl (or of every "
        "subdirectory holding one) with ndes.plot.plot_run.",
    )
    plot.add_argument("run_dir", help="a run directory written by ndes train / ndes.fit")
    plot.add_argument(
        "-o", "--output", default=None, help="output PNG (default RUN_DIR/history.png)"
    )
    plot.add_argument(
        "--keys", default=None, help="comma-separated metrics to draw, e.g. loss,eval_num_fevals"
    )
    plot.set_defaults(func=_cmd_plot)

    info = sub.add_parser("info", help="print versions and devices")
    info.set_defaults(func=_cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)
