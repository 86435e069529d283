"""NeuralODE train step: joint solve of the batch vs jax.vmap of per-sample solves.

MLP 2 -> 64 -> 64 -> 2 (softplus), batch 256, Tsit5 with PIDController(rtol=1e-3,
atol=1e-6), t in [0, 1] saved at 10 times, MSE to a target trajectory, float32, Adam; plus
torchdiffeq (dopri5: torchdiffeq has no tsit5) when installed; ndes joint with Dopri5 too,
the same method on both sides (Tsit5's error estimate takes 4 steps here, Dopri5 3); and two
evaluation floors at the Dopri5 row's NFE: Euler steps of the same MLP in a hand-written
`lax.scan` and in a torch loop (what the field alone costs, no solver can go below). Median
of >= 20 warmed-up steps, first call (compile) separately; `fwd NFE` is each side's vector-field
evaluations in one forward solve at the initial parameters (ndes's exact counter; torchdiffeq:
calls of the field), so a time ratio can be read per evaluation. `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _timing import time_interleaved

from ndes.models._ode import NeuralODE


def data(batch, n_t, seed=0):
    rng = np.random.default_rng(seed)
    y0 = rng.normal(size=(batch, 2)).astype(np.float32)
    ts = np.linspace(0, 1, n_t, dtype=np.float32)
    # target: a damped rotation of y0
    ang, dec = 2.0 * ts, np.exp(-0.5 * ts)
    rot = np.stack(
        [np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], -2
    )
    target = np.einsum("tij,bj->bti", rot * dec[:, None, None], y0).astype(np.float32)
    return ts, y0, target


def adam_runner(module, predict, target):
    """A zero-argument train step: one jitted Adam update (lr 1e-3) of `module`'s arrays on
    the MSE of `predict(module)` to `target`, waiting for the result."""
    opt = optax.adam(1e-3)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    state = [params, opt.init(params)]

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            return jnp.mean((predict(eqx.combine(p, static)) - target) ** 2)

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    def run():
        p, o, loss = step(*state)
        jax.block_until_ready(loss)
        state[0], state[1] = p, o

    return run


def torch_mlp(width):
    """The same MLP in torch (softplus), seeded."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(2, width),
        torch.nn.Softplus(),
        torch.nn.Linear(width, width),
        torch.nn.Softplus(),
        torch.nn.Linear(width, 2),
    )


def ndes_step(mode, width, ts, y0, target, solver=None):
    model = NeuralODE.mlp(
        2,
        width,
        2,
        key=jr.PRNGKey(0),
        batch_mode=mode,
        solver=solver or diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
        dt0=None,
    )
    model = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model
    )
    ts_j, y0_j, tgt = jnp.asarray(ts), jnp.asarray(y0), jnp.asarray(target)
    run = adam_runner(model, lambda m: m(ts_j, y0_j).ys, tgt)
    # Forward NFE of one solve at the initial parameters (per sample in vmap mode).
    nfe = jnp.mean(eqx.filter_jit(lambda m: m(ts_j, y0_j).stats["num_fevals"])(model))
    return run, float(nfe)


def scan_floor_step(width, ts, y0, target, nfe):
    """The evaluation floor: `nfe` evaluations of the same MLP field in a hand-written
    `lax.scan` (explicit Euler steps on a grid that contains the save times), forward and
    reverse-mode gradient, Adam. No solver can take `nfe` evaluations for less, so the row
    says what the field alone costs; the gap to it is the solver's bookkeeping."""
    n_t = len(ts)
    per = max(1, round((nfe - 1) / (n_t - 1)))  # steps per save interval
    n = per * (n_t - 1)
    model = NeuralODE.mlp(2, width, 2, key=jr.PRNGKey(0))
    mlp = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model.vector_field
    )
    h = float(ts[-1] - ts[0]) / n
    y0_j, tgt = jnp.asarray(y0), jnp.asarray(target)

    def solve(field, y):
        def body(y, _):
            y = y + h * jax.vmap(lambda v: field(0.0, v, None))(y)
            return y, y

        _, path = jax.lax.scan(body, y, None, length=n)
        return jnp.concatenate([y[None], path[per - 1 :: per]], 0)  # (T, B, 2)

    run = adam_runner(mlp, lambda f: jnp.swapaxes(solve(f, y0_j), 0, 1), tgt)
    return run, float(n)


def torch_floor_step(width, ts, y0, target, nfe):
    """`scan_floor_step` in torch: the same Euler steps in a Python loop, autograd, Adam."""
    import torch

    f = torch_mlp(width)
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    n_t = len(ts)
    per = max(1, round((nfe - 1) / (n_t - 1)))
    n, h = per * (n_t - 1), float(ts[-1] - ts[0]) / (per * (n_t - 1))
    x0, tgt = torch.tensor(y0), torch.tensor(target).transpose(0, 1)

    def run():
        opt.zero_grad()
        y, out = x0, [x0]
        for i in range(n):
            y = y + h * f(y)
            if (i + 1) % per == 0:
                out.append(y)
        loss = ((torch.stack(out) - tgt) ** 2).mean()
        loss.backward()
        opt.step()

    return run, float(n)


def torch_step(width, ts, y0, target):
    import torch
    from torchdiffeq import odeint

    f = torch_mlp(width)
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    t, x0, tgt = torch.tensor(ts), torch.tensor(y0), torch.tensor(target).transpose(0, 1)

    def run():
        opt.zero_grad()
        ys = odeint(lambda _t, y: f(y), x0, t, method="dopri5", rtol=1e-3, atol=1e-6)
        loss = ((ys - tgt) ** 2).mean()
        loss.backward()
        opt.step()

    # Forward NFE of one solve at the initial parameters: calls of the vector field.
    calls = [0]

    def counted(_t, y):
        calls[0] += 1
        return f(y)

    with torch.no_grad():
        odeint(counted, x0, t, method="dopri5", rtol=1e-3, atol=1e-6)
    return run, float(calls[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, as in cde_speed.py and sde_speed.py)",
    )
    a = ap.parse_args(argv)
    if a.quick:
        width, batch, n_t, repeats = 8, 8, 3, a.repeats or 3
    else:
        width, batch, n_t, repeats = 64, 256, 10, a.repeats or 20
    ts, y0, target = data(batch, n_t)
    try:
        import torch

        if a.torch_threads > 0:
            torch.set_num_threads(a.torch_threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    except ImportError:
        pass
    print(
        f"NeuralODE train step: MLP 2->{width}->{width}->2, batch {batch}, Tsit5 rtol 1e-3 "
        f"atol 1e-6 (torchdiffeq: dopri5), {n_t} save times, float32, Adam; median of {repeats}"
    )
    print(f"{'impl':22s} {'step ms':>9s} {'first s':>8s} {'vs joint':>9s} {'fwd NFE':>8s}")
    rows = [
        ("ndes joint", ndes_step("joint", width, ts, y0, target)),
        ("ndes vmap", ndes_step("vmap", width, ts, y0, target)),
        # torchdiffeq's solver, so that both sides take the same steps.
        ("ndes joint dopri5", ndes_step("joint", width, ts, y0, target, diffrax.Dopri5())),
    ]
    try:
        rows.append(("torchdiffeq dopri5", torch_step(width, ts, y0, target)))
    except ImportError:
        pass
    # The floors at the Dopri5 row's evaluation count (see scan_floor_step).
    nfe = rows[2][1][1]
    rows.append(("jax scan floor", scan_floor_step(width, ts, y0, target, nfe)))
    try:
        rows.append(("torch loop floor", torch_floor_step(width, ts, y0, target, nfe)))
    except ImportError:
        pass
    # Interleaved (round-robin) so that load drift on a shared machine affects all rows alike.
    timed = time_interleaved([fn for _, (fn, _) in rows], repeats)
    ref = timed[0][0]
    for (label, (_, nfe)), (med, first, _) in zip(rows, timed, strict=True):
        print(f"{label:22s} {med * 1e3:9.2f} {first:8.2f} {med / ref:8.2f}x {nfe:8.0f}")


if __name__ == "__main__":
    main()
