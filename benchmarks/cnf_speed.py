"""CNF (FFJORD) train step: ndes.CNF vs raw diffrax vs torchdiffeq, side by side in one process.

One train step = the log-likelihood of a batch by one adaptive solve of the augmented state
(z, log p) with the Hutchinson divergence (a Gaussian probe, the same array in every row and
every step), the gradient of the mean NLL, one Adam update (lr 1e-3). Same model in every row:
the time-conditioned MLP [t, z] (3) -> 64 -> 64 -> 64 -> 2, tanh (`ndes.CNF.mlp(2, 64, 3)`;
torch gets a copy of the same initial weights), dopri5 (diffrax `Dopri5`, torchdiffeq
`"dopri5"`), rtol 1e-3, atol 1e-5, first step chosen by the solver's heuristic, t in [0, 1],
batch 512 of FFJORD's 8 Gaussians (`ndes.data.toy_2d`), float32. Gradients by backpropagation
through the solver (diffrax `RecursiveCheckpointAdjoint`, torchdiffeq `odeint`).

Rows:

- `ndes.CNF joint`: `ndes.CNF.log_prob` (the batch as one state, FFJORD's layout).
- `raw diffrax, vmap (example)`: the diffrax CNF example's approach
  (`docs/examples/continuous_normalising_flows.ipynb`: `approx_logp_wrapper`, `jax.vjp` of the
  field, the probe in `args`, one solve per sample under `jax.vmap`).
- `raw diffrax, joint`: the same field on the whole batch as one state (what ndes does,
  without ndes): the cost of ndes's plumbing.
- `torchdiffeq dopri5`: an FFJORD-style `ODEfunc` (`rtqichen/ffjord`, `lib/layers/odefunc.py`,
  `divergence_approx`: `torch.autograd.grad(f, z, e, create_graph=True)`), `odeint`, with
  `torch.set_num_threads(1)`; skipped when torch / torchdiffeq are missing.

Each row is called once first (compile / warm-up, reported apart), then the rows are timed
interleaved (round robin), median of `--repeats` (>= 20 by default). Cost column: forward NFE, exact
for ndes (`stats["num_fevals"]`) and counted for torch (calls of the field); raw diffrax
reports its number of steps (`stats["num_steps"]`, accepted + rejected; mean over the batch
for the vmap row), not evaluations.

    python benchmarks/cnf_speed.py            # full (about a CPU minute)
    python benchmarks/cnf_speed.py --pretrain 300   # time a partly trained flow (more steps)
    python benchmarks/cnf_speed.py --quick    # seconds-scale smoke run (used by a test)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import time_interleaved  # noqa: E402

import ndes  # noqa: E402
from ndes.models._divergence import draw_probe  # noqa: E402

RTOL, ATOL, LR = 1e-3, 1e-5, 1e-3


def _gauss_logp(z):
    return -0.5 * (jnp.sum(z**2, -1) + z.shape[-1] * math.log(2 * math.pi))


def _adam_step(loss_fn, params, static):
    opt = optax.adam(LR)
    state = [params, opt.init(params)]

    @jax.jit
    def step(p, o):
        (loss, nfe), g = jax.value_and_grad(
            lambda q: loss_fn(eqx.combine(q, static)), has_aux=True
        )(p)
        upd, o = opt.update(g, o, p)
        return optax.apply_updates(p, upd), o, loss, nfe

    def run():
        p, o, loss, nfe = step(*state)
        jax.block_until_ready(loss)
        state[0], state[1] = p, o
        return float(loss), float(nfe)

    return run


def pretrain(model, x, steps: int):
    """`steps` Adam steps (lr 1e-2, a fresh probe each) on the NLL, so the timed flow is not
    the near-identity of the initialisation (whose solve takes 3 steps)."""
    if steps <= 0:
        return model
    opt = optax.adam(1e-2)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)
    xj = jnp.asarray(x)

    @jax.jit
    def step(p, o, k):
        g = jax.grad(lambda q: -jnp.mean(eqx.combine(q, static).log_prob(xj, k).ys))(p)
        upd, o = opt.update(g, o, p)
        return optax.apply_updates(p, upd), o

    for i in range(steps):
        params, state = step(params, state, jr.key(1000 + i))
    return eqx.combine(params, static)


def ndes_row(model, x, key):
    xj = jnp.asarray(x)

    def loss(m):
        out = m.log_prob(xj, key)
        return -jnp.mean(out.ys), out.stats["num_fevals"]

    return _adam_step(loss, *eqx.partition(model, eqx.is_inexact_array))


def _augmented(t, y, args, joint: bool):
    """The diffrax example's augmented field: (f, -e^T (df/dz) e) by one `jax.vjp`."""
    z, _ = y
    e, func = args
    one = lambda zz: func(t, zz, None)  # noqa: E731
    fn = jax.vmap(one) if joint else one
    f, vjp_fn = jax.vjp(fn, z)
    (e_dfdz,) = vjp_fn(e)
    return f, -jnp.sum(e_dfdz * e, axis=-1)


def diffrax_row(model, x, eps, joint: bool):
    """The diffrax example's CNF solve (vmap of per-sample solves), or the joint variant."""
    field = model.vector_field
    xj, epsj = jnp.asarray(x), jnp.asarray(eps)
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    approx_logp_wrapper = functools.partial(_augmented, joint=joint)

    def solve(z0, e, func):
        l0 = jnp.zeros(z0.shape[:-1], z0.dtype)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(approx_logp_wrapper), diffrax.Dopri5(), 0.0, 1.0, None, (z0, l0),
            args=(e, func), stepsize_controller=controller, max_steps=4096,
        )  # fmt: skip
        (z1,), (l1,) = sol.ys
        return _gauss_logp(z1) - l1, sol.stats["num_steps"]

    def loss(f):
        if joint:
            logp, steps = solve(xj, epsj, f)
        else:
            logp, steps = jax.vmap(solve, in_axes=(0, 0, None))(xj, epsj, f)
            steps = jnp.mean(steps)
        return -jnp.mean(logp), -steps  # negative: a step count, not an NFE

    return _adam_step(loss, *eqx.partition(field, eqx.is_inexact_array))


def scan_floor_row(model, x, eps, nfe: int):
    """The evaluation floor: `nfe` explicit Euler steps of the same augmented field (joint
    batch) in a hand-written `lax.scan`, gradient and Adam: what `nfe` evaluations cost
    without a solver's bookkeeping. Not a strict lower bound: the scan stores every residual
    for the backward pass where diffrax's loop checkpoints and recomputes, and at the
    benchmark's size that memory traffic can cost more (measured in docs/benchmarks.md)."""
    field = model.vector_field
    xj, epsj = jnp.asarray(x), jnp.asarray(eps)
    h = 1.0 / nfe

    def loss(f):
        def body(carry, i):
            z, lp = carry
            dz, dl = _augmented(i * h, (z, lp), (epsj, f), joint=True)
            return (z + h * dz, lp + h * dl), None

        l0 = jnp.zeros(xj.shape[:-1], xj.dtype)
        (z1, l1), _ = jax.lax.scan(body, (xj, l0), jnp.arange(nfe, dtype=xj.dtype))
        return -jnp.mean(_gauss_logp(z1) - l1), jnp.asarray(float(nfe))

    return _adam_step(loss, *eqx.partition(field, eqx.is_inexact_array))


def _torch_func(model, eps):
    """FFJORD's `ODEfunc` (divergence_approx, the probe fixed) on a torch copy of the MLP."""
    import torch

    torch.set_num_threads(1)
    lins = [layer for layer in model.vector_field.mlp.layers]
    mods = []
    for i, layer in enumerate(lins):
        lin = torch.nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(np.asarray(layer.weight)))
            lin.bias.copy_(torch.tensor(np.asarray(layer.bias)))
        mods += [lin] + ([torch.nn.Tanh()] if i < len(lins) - 1 else [])
    net = torch.nn.Sequential(*mods)

    class ODEfunc(torch.nn.Module):
        """FFJORD's ODEfunc with divergence_approx and a probe fixed for the solve."""

        def __init__(self, net, e):
            super().__init__()
            self.net, self.e, self.nfe = net, e, 0

        def forward(self, t, states):
            z = states[0]
            self.nfe += 1
            with torch.enable_grad():
                if not z.requires_grad:
                    z = z.requires_grad_(True)
                tz = torch.cat([t.expand(z.shape[0], 1).to(z), z], 1)
                dz = self.net(tz)
                e_dzdx = torch.autograd.grad(dz, z, self.e, create_graph=True)[0]
                div = (e_dzdx * self.e).sum(1)
            return dz, -div

    return ODEfunc(net, torch.tensor(np.asarray(eps)))


def _torch_nll(z1, l1):
    return (0.5 * (z1.pow(2).sum(1) + z1.shape[1] * math.log(2 * math.pi)) + l1).mean()


def torch_row(model, x, eps):
    import torch
    from torchdiffeq import odeint

    func = _torch_func(model, eps)
    opt = torch.optim.Adam(func.net.parameters(), lr=LR)
    t = torch.tensor([0.0, 1.0])
    xt = torch.tensor(np.asarray(x))

    def run():
        func.nfe = 0
        opt.zero_grad()
        z0, l0 = xt.clone(), torch.zeros(xt.shape[0])
        zs, ls = odeint(func, (z0, l0), t, method="dopri5", rtol=RTOL, atol=ATOL)
        loss = _torch_nll(zs[-1], ls[-1])
        nfe = func.nfe
        loss.backward()
        opt.step()
        return float(loss.detach()), float(nfe)

    return run


def torch_floor_row(model, x, eps, nfe: int):
    """`scan_floor_row` in torch: the same Euler steps of `ODEfunc` in a Python loop."""
    import torch

    func = _torch_func(model, eps)
    opt = torch.optim.Adam(func.net.parameters(), lr=LR)
    xt, h = torch.tensor(np.asarray(x)), 1.0 / nfe

    def run():
        opt.zero_grad()
        z, lp = xt.clone(), torch.zeros(xt.shape[0])
        for i in range(nfe):
            dz, dl = func(torch.tensor(i * h), (z, lp))
            z, lp = z + h * dz, lp + h * dl
        loss = _torch_nll(z, lp)
        loss.backward()
        opt.step()
        return float(loss.detach()), float(nfe)

    return run


def _cost(nfe: float) -> str:
    return f"{-nfe:.0f} steps" if nfe < 0 else f"{nfe:.0f}"


def table(rows) -> str:
    lines = [
        "| implementation | step ms (median) | first call s (compile) | forward NFE | "
        "step / ndes |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = rows[0]["step_s"]
    for r in rows:
        lines.append(
            f"| {r['impl']} | {1e3 * r['step_s']:.1f} | {r['first_s']:.2f} | {_cost(r['nfe'])} | "
            f"{r['step_s'] / base:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--pretrain", type=int, default=0, help="Adam steps before timing")
    p.add_argument("--no-torch", action="store_true", help="skip the torchdiffeq row")
    p.add_argument("--out", default=None, help="write results.json here (a directory)")
    a = p.parse_args(argv)
    width, depth, batch = (8, 1, 32) if a.quick else (64, 3, 512)
    repeats = a.repeats or (3 if a.quick else 20)
    x = np.asarray(ndes.data.toy_2d("8gaussians", batch, key=jr.key(0)), np.float32)
    key = jr.key(1)
    eps = draw_probe(key, x.shape, jnp.float32, "gaussian")  # = the probe ndes draws from key
    model = ndes.CNF.mlp(
        2, width, depth, key=jr.key(2), solver=diffrax.Dopri5(),
        stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
    )  # fmt: skip
    model = pretrain(model, x, a.pretrain)
    impls = [
        ("ndes.CNF joint", ndes_row(model, x, key)),
        ("raw diffrax, vmap (example)", diffrax_row(model, x, eps, joint=False)),
        ("raw diffrax, joint", diffrax_row(model, x, eps, joint=True)),
    ]
    # The floors at ndes's forward NFE of the timed flow (see scan_floor_row).
    nfe = int(eqx.filter_jit(lambda m: m.log_prob(jnp.asarray(x), key).stats["num_fevals"])(model))
    impls.append((f"jax scan floor (Euler, {nfe} evals)", scan_floor_row(model, x, eps, nfe)))
    if not a.no_torch:
        try:
            impls.append(("torchdiffeq dopri5 (1 thread)", torch_row(model, x, eps)))
            impls.append((f"torch loop floor ({nfe} evals)", torch_floor_row(model, x, eps, nfe)))
        except ImportError as e:
            print(f"torchdiffeq row skipped: {e}")
    timed = time_interleaved([fn for _, fn in impls], repeats)
    rows = [
        {"impl": name, "step_s": med, "first_s": first, "loss": out[0], "nfe": out[1]}
        for (name, _), (med, first, out) in zip(impls, timed, strict=True)
    ]
    versions = f"jax {jax.__version__}, diffrax {diffrax.__version__}"
    try:
        import torch
        import torchdiffeq

        versions += f", torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}"
    except ImportError:
        pass
    text = table(rows)
    print(
        f"CNF train step: MLP [t,z] -> {width} x{depth} -> 2 tanh, batch {batch}, dopri5 "
        f"rtol {RTOL} atol {ATOL}, Hutchinson (Gaussian), float32, Adam; median of {repeats}; "
        f"pretrained {a.pretrain} steps\n"
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {versions}\n"
    )
    print(text)
    for r in rows[1:]:
        print(f"ndes / {r['impl']}: {rows[0]['step_s'] / r['step_s']:.2f}x")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(
            {"rows": rows, "table": text, "versions": versions, "pretrain": a.pretrain}, f,
            indent=1,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
