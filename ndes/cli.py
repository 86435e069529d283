"""The `ndes` command line: `ndes demo`, `ndes info`."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence


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

    from ._demo import DemoConfig, format_table, run_demo

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    print(
        f"ndes demo: neural ODE (MLP 2-{cfg.width}-{cfg.width}-2) fitted to cubic-spiral "
        f"trajectories, {cfg.steps} Adam steps of batch {cfg.batch}, Tsit5 with "
        f"PIDController(rtol={cfg.rtol}, atol={cfg.atol}); evaluation on {cfg.num_test} new "
        "initial conditions without regularizers."
    )
    results = run_demo(cfg, progress=None if not args.no_progress else False)
    print(format_table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ndes", description="Neural differential equations that learn to be cheap to solve."
    )
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train a neural ODE vanilla / ErrorEstimate / StiffnessEstimate; print a table"
    )
    demo.add_argument("--quick", action="store_true", help="a seconds-long variant (tests)")
    demo.add_argument("--steps", type=int, default=None, help="training steps per method")
    demo.add_argument("--seed", type=int, default=None, help="random seed")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    info = sub.add_parser("info", help="print versions and devices")
    info.set_defaults(func=_cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
