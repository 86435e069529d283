"""Neural SDE train-step speed: torchsde vs diffrax+VirtualBrownianTree vs ndes vs lax.scan.

Setup: diagonal-noise neural SDE, drift and diffusion MLPs 4 -> 64 -> 4 (tanh hidden; the
diffusion ends in a sigmoid), batch 256, t in [0, 1], 50 fixed steps, float32. Loss: mean
squared distance of y(1) to a fixed target; a train step is value_and_grad (reverse mode
through the solver, no adjoint) plus an Adam update. Two cases: Itô Euler--Maruyama
("euler") and Stratonovich Heun ("heun").

Rows (all in this process, same sizes):

- `torchsde`: `torchsde.sdeint(method="euler"|"heun", dt=1/50)`, default Brownian motion
  (`BrownianInterval`), backprop through the solver (no adjoint), torch CPU threads as set.
- `diffrax+VBT`: plain `diffrax.diffeqsolve` of the joint batch (state (256, 4)) with
  `diffrax.VirtualBrownianTree(tol=1e-3)`.
- `ndes grid joint` / `ndes grid vmap`: `NeuralSDE(num_steps=50)` (GridBrownianPath,
  `ndes.diffeqsolve`), joint batch and per-sample `jax.vmap`.
- `diffrax+grid`: plain `diffrax.diffeqsolve`, joint state, `GridBrownianPath`,
  `RecursiveCheckpointAdjoint(checkpoints=50)` (every step stored, as the scan does and as
  `NeuralSDE` picks for fixed steps; diffrax's default recomputes and is ~1.2-1.4x slower).
- `lax.scan`: a hand-written scan loop doing the same math on the joint state with
  increments drawn at once.

Reported: median of >= 20 warmed-up steps, first call (compile) separately, ratio to
torchsde. `--quick` runs tiny sizes, Euler--Maruyama only (compile-bound, ~30 s on 2
busy CPU cores). `--tol-sweep` measures how the cost of an adaptive Heun solve with
`VirtualBrownianTree` grows as `tol` shrinks (the basis of
`ndes.models._sde.default_tree_tol`). Run: `python benchmarks/sde_speed.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import optax

from ndes._brownian import GridBrownianPath
from ndes.models._sde import NeuralSDE


def timeit(fn, repeats):
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


class MLP(eqx.Module):
    """`n -> width -> n`, tanh hidden; the same math as the torch rows."""

    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    final_sigmoid: bool = eqx.field(static=True)

    def __init__(self, n, width, key, final_sigmoid=False):
        k1, k2 = jr.split(key)
        self.l1 = eqx.nn.Linear(n, width, key=k1, dtype=jnp.float32)
        self.l2 = eqx.nn.Linear(width, n, key=k2, dtype=jnp.float32)
        self.final_sigmoid = final_sigmoid

    def __call__(self, t, y, args=None):
        out = self.l2(jnp.tanh(self.l1(y)))
        return jax.nn.sigmoid(out) if self.final_sigmoid else out

    def batch(self, y):
        """Apply to a (B, n) batch with matmuls (the scan loop's form)."""
        h = jnp.tanh(y @ self.l1.weight.T + self.l1.bias)
        out = h @ self.l2.weight.T + self.l2.bias
        return jax.nn.sigmoid(out) if self.final_sigmoid else out


class Fields(eqx.Module):
    drift: MLP
    diffusion: MLP


def make_fields(n, width):
    kd, kg = jr.split(jr.PRNGKey(0))
    return Fields(MLP(n, width, kd), MLP(n, width, kg, final_sigmoid=True))


def jax_trainer(loss_of, params0, keys):
    """Jitted value_and_grad + Adam step; returns a runner over fresh keys."""
    opt = optax.adam(1e-3)
    state = {"p": params0, "o": opt.init(eqx.filter(params0, eqx.is_inexact_array)), "i": 0}

    @eqx.filter_jit
    def step(p, o, key):
        loss, g = eqx.filter_value_and_grad(loss_of)(p, key)
        upd, o = opt.update(g, o, eqx.filter(p, eqx.is_inexact_array))
        return eqx.apply_updates(p, upd), o, loss

    def run():
        k = keys[state["i"] % len(keys)]
        state["i"] += 1
        state["p"], state["o"], loss = step(state["p"], state["o"], k)
        jax.block_until_ready(loss)

    return run


def diffrax_loss(solver_name, bm_kind, batch, n, steps, y0, target):
    solver = diffrax.Euler() if solver_name == "euler" else diffrax.Heun()

    def loss(fields, key):
        drift = lambda t, y, a: jax.vmap(fields.drift, in_axes=(None, 0))(t, y)
        diff = lambda t, y, a: lx.DiagonalLinearOperator(
            jax.vmap(fields.diffusion, in_axes=(None, 0))(t, y)
        )
        if bm_kind == "vbt":
            bm = diffrax.VirtualBrownianTree(
                0.0, 1.0, tol=1e-3, shape=jax.ShapeDtypeStruct((batch, n), jnp.float32), key=key
            )
        else:
            bm = GridBrownianPath(0.0, 1.0, (batch, n), key, num_steps=steps, dtype=jnp.float32)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))
        # The grid row checkpoints every step (as NeuralSDE does for fixed steps); the VBT
        # row keeps diffrax's default adjoint, as a user would.
        checkpoints = steps if bm_kind == "grid" else None
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)
        sol = diffrax.diffeqsolve(
            terms, solver, 0.0, 1.0, 1.0 / steps, y0, max_steps=steps + 1, adjoint=adjoint
        )
        return jnp.mean((sol.ys[-1] - target) ** 2)

    return loss


def ndes_loss(solver_name, mode, steps, y0, target):
    solver = diffrax.Euler() if solver_name == "euler" else diffrax.Heun()
    sde_type = "ito" if solver_name == "euler" else "stratonovich"
    ts = jnp.array([0.0, 1.0], jnp.float32)

    def loss(fields, key):
        model = NeuralSDE(
            fields.drift,
            fields.diffusion,
            solver=solver,
            sde_type=sde_type,
            num_steps=steps,
            batch_mode=mode,
            max_steps=steps + 1,
        )
        ys = model(ts, y0, key=key).ys
        return jnp.mean((ys[:, -1] - target) ** 2)

    return loss


def scan_loss(solver_name, batch, n, steps, y0, target):
    dt = 1.0 / steps

    def loss(fields, key):
        dws = jr.normal(jr.fold_in(key, 0), (steps, batch, n), jnp.float32) * jnp.sqrt(
            jnp.float32(dt)
        )

        def em(y, dw):
            return y + fields.drift.batch(y) * dt + fields.diffusion.batch(y) * dw, None

        def heun(y, dw):
            f0, g0 = fields.drift.batch(y), fields.diffusion.batch(y)
            y1 = y + f0 * dt + g0 * dw
            f1, g1 = fields.drift.batch(y1), fields.diffusion.batch(y1)
            return y + 0.5 * (f0 + f1) * dt + 0.5 * (g0 + g1) * dw, None

        y, _ = jax.lax.scan(em if solver_name == "euler" else heun, y0, dws)
        return jnp.mean((y - target) ** 2)

    return loss


def torch_runner(solver_name, batch, n, width, steps, y0, target):
    import torch
    import torchsde

    torch.manual_seed(0)

    class SDE(torch.nn.Module):
        noise_type = "diagonal"
        sde_type = "ito" if solver_name == "euler" else "stratonovich"

        def __init__(self):
            super().__init__()
            self.f_net = torch.nn.Sequential(
                torch.nn.Linear(n, width), torch.nn.Tanh(), torch.nn.Linear(width, n)
            )
            self.g_net = torch.nn.Sequential(
                torch.nn.Linear(n, width),
                torch.nn.Tanh(),
                torch.nn.Linear(width, n),
                torch.nn.Sigmoid(),
            )

        def f(self, t, y):
            return self.f_net(y)

        def g(self, t, y):
            return self.g_net(y)

    sde = SDE()
    opt = torch.optim.Adam(sde.parameters(), lr=1e-3)
    y0_t = torch.tensor(np.asarray(y0))
    target_t = torch.tensor(np.asarray(target))
    ts = torch.tensor([0.0, 1.0])

    def run():
        opt.zero_grad()
        ys = torchsde.sdeint(sde, y0_t, ts, method=solver_name, dt=1.0 / steps)
        loss = ((ys[-1] - target_t) ** 2).mean()
        loss.backward()
        opt.step()

    return run


def tol_sweep(batch, n, width, repeats):
    """Cost of an adaptive joint Heun solve (PIDController rtol=atol=1e-2) with a
    VirtualBrownianTree as tol shrinks: forward + backward, median ms, steps taken."""
    fields = make_fields(n, width)
    y0 = jr.normal(jr.PRNGKey(1), (batch, n), jnp.float32)
    print(f"tol sweep: adaptive Heun, PID rtol=atol=1e-2, joint batch {batch}, median of {repeats}")
    print(f"{'tol':>10s} {'levels':>6s} {'step ms':>9s} {'steps':>6s} {'|y(tol)-y(2^-20)|':>18s}")
    finest = None
    rows = []
    for lev in (20, 4, 6, 8, 10, 12, 14, 16, 18):
        tol = 2.0**-lev

        def loss(f, key, tol=tol):
            drift = lambda t, y, a: jax.vmap(f.drift, in_axes=(None, 0))(t, y)
            diff = lambda t, y, a: lx.DiagonalLinearOperator(
                jax.vmap(f.diffusion, in_axes=(None, 0))(t, y)
            )
            bm = diffrax.VirtualBrownianTree(
                0.0, 1.0, tol=tol, shape=jax.ShapeDtypeStruct((batch, n), jnp.float32), key=key
            )
            terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))
            sol = diffrax.diffeqsolve(
                terms,
                diffrax.Heun(),
                0.0,
                1.0,
                0.05,
                y0,
                stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
                max_steps=4096,
            )
            return jnp.mean(sol.ys[-1] ** 2), (sol.ys[-1], sol.stats["num_steps"])

        g = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))
        key = jr.PRNGKey(2)
        (val, (yT, nsteps)), _ = g(fields, key)

        def run(g=g, key=key):
            jax.block_until_ready(g(fields, key))

        _, med = timeit(run, repeats)
        if finest is None:
            finest = yT
        err = float(jnp.mean(jnp.abs(yT - finest)))
        rows.append((lev, tol, med, int(nsteps), err))
    for lev, tol, med, ns, err in sorted(rows, key=lambda r: r[0]):
        print(f"{tol:10.2e} {lev:6d} {med * 1e3:9.2f} {ns:6d} {err:18.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few repeats")
    ap.add_argument("--tol-sweep", action="store_true", help="VirtualBrownianTree cost vs tol")
    ap.add_argument("--no-torch", action="store_true", help="skip the torchsde rows")
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        batch, n, width, steps, repeats = 8, 4, 8, 5, 3
    else:
        batch, n, width, steps, repeats = 256, 4, 64, 50, 20
    if a.repeats is not None:
        repeats = a.repeats
    if a.tol_sweep:
        tol_sweep(batch, n, width, repeats)
        return
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    use_torch = torch_version is not None and not a.no_torch

    y0 = jr.normal(jr.PRNGKey(1), (batch, n), jnp.float32)
    target = jnp.ones((batch, n), jnp.float32)
    keys = list(jr.split(jr.PRNGKey(3), 8))
    print(
        f"neural SDE train step: batch {batch}, MLP {n}->{width}->{n} drift and diffusion, "
        f"{steps} steps on [0, 1], float32, Adam; median of {repeats} (provisional: shared CPU)."
    )
    print(
        "peers: torchsde "
        + (
            torch_version
            and f"(torch {torch_version}) sdeint dt=1/{steps}, BrownianInterval, autograd"
            or "not installed"
        )
        + f"; diffrax {diffrax.__version__} VirtualBrownianTree(tol=1e-3); jax {jax.__version__}"
    )
    print(f"{'solver':6s} {'impl':18s} {'step ms':>9s} {'first s':>8s} {'vs torchsde':>12s}")
    # --quick: the Euler--Maruyama case only (compilation dominates a smoke run).
    for solver_name in ("euler",) if a.quick else ("euler", "heun"):
        fields = make_fields(n, width)
        rows = []
        if use_torch:
            rows.append(("torchsde", torch_runner(solver_name, batch, n, width, steps, y0, target)))
        losses = [
            ("diffrax+VBT", diffrax_loss(solver_name, "vbt", batch, n, steps, y0, target)),
            ("diffrax+grid", diffrax_loss(solver_name, "grid", batch, n, steps, y0, target)),
            ("ndes grid joint", ndes_loss(solver_name, "joint", steps, y0, target)),
            ("ndes grid vmap", ndes_loss(solver_name, "vmap", steps, y0, target)),
            ("lax.scan", scan_loss(solver_name, batch, n, steps, y0, target)),
        ]
        rows += [(label, jax_trainer(loss, fields, keys)) for label, loss in losses]
        ref = None
        for label, run in rows:
            first, med = timeit(run, repeats)
            if label == "torchsde":
                ref = med
            ratio = f"{med / ref:.2f}x" if ref else "-"
            print(
                f"{solver_name:6s} {label:18s} {med * 1e3:9.2f} {first:8.2f} {ratio:>12s}",
                flush=True,
            )


if __name__ == "__main__":
    main()
