"""Neural CDE train-step speed: torchcde vs ndes (vmap and joint batch modes), one process.

Setup (Kidger et al. 2020 style): hidden 32, 3 channels (time + 2 values), length 50, a
ReLU hidden layer and a final tanh in the field (ndes's default; torchcde's example),
batch 128, Hermite cubic with backward differences, float32, 2-class readout with
cross-entropy, Adam. Solvers: Midpoint with 50 steps (fixed) and Dopri5 (rtol 1e-3,
atol 1e-6; torchcde's "dopri5"). A train step is value_and_grad + optimiser update.
All rows of a solver are compiled (first call, reported separately), then timed round-robin
(`benchmarks/_timing.time_interleaved`) so that load drift on a shared machine affects every
row alike. Reported: median of >= 20 steps, ratio to torchcde; torch threads printed.
The fixed-step solver also gets a `jax scan floor` row, the same model's Midpoint steps in a
hand-written `lax.scan` (`scan_floor_predict`: what no fixed-step solve can beat), and a
`scan of diffrax step` row, diffrax's own `Midpoint.step` in a `lax.scan`
(`scan_step_predict`), which splits the gap to the floor between diffrax's outer loop and
its Runge-Kutta step.
Run: `python benchmarks/cde_speed.py` (`--quick` for a seconds-long smoke run).
"""

from __future__ import annotations

import argparse
import os

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _timing import time_interleaved

from ndes.models._cde import NeuralCDE


def make_data(batch, length, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, length - 1.0, length, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (batch, 1)).astype(np.float32)
    freq = rng.uniform(0.05, 0.3, (batch, 1)).astype(np.float32)
    x1 = np.sin(freq * t + phase)
    x2 = np.cos(freq * t + phase) * 0.5
    xs = np.stack([np.broadcast_to(t / (length - 1), (batch, length)), x1, x2], -1)
    ys = (freq[:, 0] > 0.175).astype(np.int64)
    return t, xs.astype(np.float32), ys


def _model(mode, solver, adaptive, hidden, channels, steps):
    kw = (
        dict(stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6), dt0=None)
        if adaptive
        else dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0 / steps)
    )
    return NeuralCDE(
        channels,
        hidden,
        2,
        hidden,
        1,
        key=jr.PRNGKey(0),
        solver=solver,
        batch_mode=mode,
        dtype=jnp.float32,
        **kw,
    )


def ndes_step(mode, solver, adaptive, hidden, channels, ts, xs, ys, steps):
    model = _model(mode, solver, adaptive, hidden, channels, steps)
    ts_j = jnp.asarray(ts)
    coeffs = model.coefficients(ts_j, jnp.asarray(xs))
    return _adam_runner(model, lambda m: m(ts_j, coeffs).ys, jnp.asarray(ys))


def _control(model, ts, xs, steps):
    """What both hand-written solves share: the times, the step, the batch of control paths
    (the model's Hermite coefficients) and the paths' initial values."""
    ts_j = jnp.asarray(ts)
    coeffs = model.coefficients(ts_j, jnp.asarray(xs))
    paths = jax.vmap(lambda c: diffrax.CubicInterpolation(ts_j, tuple(c)))(coeffs)
    x0 = jax.vmap(lambda p: p.evaluate(ts_j[0]))(paths)
    return ts_j, float(ts[-1] - ts[0]) / steps, paths, x0


def scan_floor_predict(model, ts, xs, steps):
    """The fixed-step floor's forward pass, `predict(model) -> logits (B, 2)`: the same
    model's `steps` Midpoint steps written as a `lax.scan` over the batch (one state), the
    control's derivative at every stage time precomputed (the data, not the parameters),
    then the readout. Equal to the joint Midpoint model's `ys` (tested). The gap between
    the ndes rows and this one is the solve's plumbing."""
    ts_j, h, paths, x0 = _control(model, ts, xs, steps)
    stage_t = ts[0] + h * jnp.arange(2 * steps) / 2  # t_n and t_n + h/2, interleaved
    dx = jax.vmap(lambda p: jax.vmap(p.derivative)(stage_t))(paths)  # (B, 2 steps, C)
    dx = jnp.swapaxes(dx.reshape(dx.shape[0], steps, 2, -1), 0, 1)  # (steps, B, 2, C)

    def predict(m):
        def f(z, dxdt):  # (B, H), (B, C) -> (B, H)
            return jnp.einsum("bhc,bc->bh", jax.vmap(lambda y: m.field(0.0, y))(z), dxdt)

        def body(z, d):
            zm = z + 0.5 * h * f(z, d[:, 0])
            return z + h * f(zm, d[:, 1]), None

        z1, _ = jax.lax.scan(body, jax.vmap(m.initial)(x0), dx)
        return jax.vmap(m.readout)(z1)

    return predict


def scan_step_predict(model, ts, xs, steps):
    """The same solve as `predict(model) -> logits`, but diffrax's own `Midpoint().step` driven
    by a `lax.scan` instead of diffrax's `diffeqsolve` loop (the control's derivative looked up
    per stage, as in the ndes rows): splits the gap to the floor between the outer loop and
    the Runge-Kutta step's internals. Equal to the joint Midpoint model's `ys` (tested)."""
    ts_j, h, paths, x0 = _control(model, ts, xs, steps)
    solver = diffrax.Midpoint()

    def predict(m):
        def vf(t, z, _args):
            dxdt = jax.vmap(lambda p: p.derivative(t))(paths)
            return jnp.einsum("bhc,bc->bh", jax.vmap(lambda y: m.field(0.0, y))(z), dxdt)

        term, y0 = diffrax.ODETerm(vf), jax.vmap(m.initial)(x0)
        state = solver.init(term, ts_j[0], ts_j[0] + h, y0, None)

        def body(carry, i):
            y, st = carry
            ta, tb = ts_j[0] + i * h, ts_j[0] + (i + 1) * h
            y, _, _, st, _ = solver.step(term, ta, tb, y, None, st, made_jump=False)
            return (y, st), None

        (z1, _), _ = jax.lax.scan(body, (y0, state), jnp.arange(steps, dtype=ts_j.dtype))
        return jax.vmap(m.readout)(z1)

    return predict


def _adam_runner(model, predict, labels):
    """A jitted cross-entropy + Adam train step on `predict(model)`'s logits; a runner."""
    opt = optax.adam(1e-3)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            logits = predict(eqx.combine(p, static))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    state = [params, opt_state]

    def run():
        p, o, loss = step(*state)
        jax.block_until_ready(loss)
        state[0], state[1] = p, o

    return run


def torch_step(method, hidden, channels, ts, xs, ys, steps):
    import torch
    import torchcde

    torch.manual_seed(0)

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = torch.nn.Linear(hidden, hidden)
            self.l2 = torch.nn.Linear(hidden, hidden * channels)

        def forward(self, t, z):
            return torch.tanh(self.l2(torch.relu(self.l1(z)))).view(z.shape[0], hidden, channels)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = F()
            self.initial = torch.nn.Linear(channels, hidden)
            self.readout = torch.nn.Linear(hidden, 2)

        def forward(self, coeffs):
            X = torchcde.CubicSpline(coeffs, t_torch)
            z0 = self.initial(X.evaluate(X.interval[0]))
            if method == "midpoint":
                h = float(t_torch[-1] - t_torch[0]) / steps
                opts = dict(method="midpoint", options=dict(step_size=h))
            else:
                opts = dict(method="dopri5", rtol=1e-3, atol=1e-6)
            z = torchcde.cdeint(X=X, func=self.f, z0=z0, t=X.interval, adjoint=False, **opts)
            return self.readout(z[:, -1])

    t_torch = torch.tensor(ts)
    x = torch.tensor(xs)
    coeffs = torchcde.hermite_cubic_coefficients_with_backward_differences(x, t_torch)
    labels = torch.tensor(ys)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(coeffs), labels)
        loss.backward()
        opt.step()

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-vCPU machine 2 OpenMP threads were "
        "measured 20x slower, spinning at barriers while the other core is busy)",
    )
    a = ap.parse_args(argv)
    if a.quick:
        hidden, channels, length, batch, steps, repeats = 8, 3, 10, 8, 5, a.repeats or 3
        solvers = [("Midpoint", "midpoint", diffrax.Midpoint(), False)]
    else:
        hidden, channels, length, batch, steps, repeats = 32, 3, 50, 128, 50, a.repeats or 20
        solvers = [
            ("Midpoint", "midpoint", diffrax.Midpoint(), False),
            ("Dopri5", "dopri5", diffrax.Dopri5(), True),
        ]
    ts, xs, ys = make_data(batch, length)
    try:
        import torch  # noqa: F401
        import torchcde  # noqa: F401

        have_torch = True
        if a.torch_threads > 0:
            torch.set_num_threads(a.torch_threads)
        peers = (
            f"torchcde {torchcde.__version__} (torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, cdeint adjoint=False)"
        )
    except ImportError:
        have_torch = False
        peers = "torchcde not installed"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"NeuralCDE train step: hidden {hidden}, channels {channels}, length {length}, batch "
        f"{batch}, Hermite cubic (backward differences), float32, Adam; jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}"
    )
    print(f"peers: {peers}; {os.cpu_count()} CPUs, load average {load:.2f} at start")
    print(
        f"Midpoint: {steps} steps; Dopri5: rtol 1e-3, atol 1e-6. Rows interleaved, "
        f"median of {repeats}."
    )
    print(f"{'solver':9s} {'impl':22s} {'step ms':>9s} {'first s':>8s} {'vs torchcde':>12s}")
    for name, tname, solver, adaptive in solvers:
        rows = []
        if have_torch:
            rows.append(("torchcde", torch_step(tname, hidden, channels, ts, xs, ys, steps)))
        for mode in ("vmap", "joint"):
            rows.append(
                (
                    f"ndes {mode}",
                    ndes_step(mode, solver, adaptive, hidden, channels, ts, xs, ys, steps),
                )
            )
        if not adaptive:
            model = _model("joint", diffrax.Midpoint(), False, hidden, channels, steps)
            for label, build in (
                ("scan of diffrax step", scan_step_predict),
                ("jax scan floor", scan_floor_predict),
            ):
                predict = build(model, ts, xs, steps)
                rows.append((label, _adam_runner(model, predict, jnp.asarray(ys))))
        res = time_interleaved([fn for _, fn in rows], repeats)
        ref = res[0][0] if have_torch else None
        for (label, _), (med, first, _) in zip(rows, res, strict=True):
            ratio = f"{med / ref:.2f}x" if ref else "n/a"
            print(f"{name:9s} {label:22s} {med * 1e3:9.2f} {first:8.2f} {ratio:>12s}", flush=True)


if __name__ == "__main__":
    main()
