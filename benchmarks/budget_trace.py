"""Trace `BudgetWeight` on one UEA problem of the generalization suite: NCDE defaults, the
suite's optimiser and sizes (200 steps, series subsampled to 64 points), printing the
loss, NFE, weight and budget every 10 steps, then test accuracy and NFE.

    python benchmarks/budget_trace.py GunPoint budget
    python benchmarks/budget_trace.py JapaneseVowels budget '{"warmup": 0.15}'
    python benchmarks/budget_trace.py GunPoint vanilla
    python benchmarks/budget_trace.py GunPoint weight=0.1     # ErrorEstimate(0.1) throughout
    python benchmarks/budget_trace.py GunPoint KineticEnergy:0.001   # any ndes regularizer

The third argument is JSON of `BudgetWeight` keywords (besides `target=0.5`); the fourth,
JSON of run options (`steps`, `seed`, `lr`, `max_length`):

    python benchmarks/budget_trace.py ArrowHead vanilla '{}' '{"steps": 600}'

"""

import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
import _gen_uea as U  # noqa: E402
from _gen_common import SuiteConfig  # noqa: E402

import ndes  # noqa: E402


def main(
    problem: str,
    method: str,
    kw: dict,
    steps: int = 200,
    seed: int = 0,
    lr: float = 1e-2,
    max_length: int = 64,
) -> None:
    cfg = SuiteConfig(steps=steps, max_length=max_length)
    data, train_s, test_s, _ = U._load(problem, 0.0, seed, cfg)
    train, test = U._prepare(train_s), U._prepare(test_s)
    model = U._build("ncde", train["coeffs"][0].shape[-1], data.num_classes, jax.random.key(seed))
    if ":" in method:  # Regularizer:weight, e.g. StiffnessEstimate:0.1, on from step 0
        name, w = method.split(":")
        regs = (getattr(ndes, name)(float(w)),)
    elif method.startswith("weight="):  # a fixed ErrorEstimate weight, on from step 0
        regs = (ndes.ErrorEstimate(float(method.split("=")[1])),)
    else:
        regs = (ndes.ErrorEstimate(),) if method != "vanilla" else ()
    budget = ndes.BudgetWeight(target=0.5, **kw).for_steps(steps) if method == "budget" else None
    warm = max(1, min(50, steps // 10))
    opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, warm, steps))
    t = time.perf_counter()
    res = ndes.fit(model, train, U._loss_fn, opt, key=jax.random.key(seed + 1000),
                   batch_size=min(32, len(train["label"])), steps=steps, regularizers=regs,
                   budget=budget, progress=False)  # fmt: skip

    @eqx.filter_jit
    def predict(m, b):
        out = U._forward(m, b, jax.random.key(seed + 2000))
        return jnp.argmax(out.ys, -1), out.stats["num_fevals"]

    pred, nfe = predict(res.model, test)
    for r in res.history[::10]:
        w = next(iter(r.get("budget_weights", {"": 0.0}).values()))
        n = next(iter(r.get("budget_targets", {"": 0.0}).values()))
        print(f"step {r['step']:4d}  loss {r['loss']:.4f}  NFE {r['num_fevals']:6.0f}  "
              f"weight {w:.4g}  budget {n:.0f}")  # fmt: skip
    print(f"{problem} {method} {kw}: accuracy {float(jnp.mean(pred == test['label'])):.4f}, "
          f"NFE {float(np.mean(nfe)):.0f}, {time.perf_counter() - t:.0f} s")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    run = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}  # steps, seed, lr, max_length
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}, **run)
