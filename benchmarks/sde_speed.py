"""Neural SDE and latent SDE train steps: torchsde, diffrax+VirtualBrownianTree, ndes, lax.scan.

**Neural SDE case.** Diagonal-noise neural SDE, drift and diffusion MLPs 4 -> 64 -> 4 (tanh
hidden; the diffusion ends in a sigmoid), batch 256, t in [0, 1], 50 fixed steps, float32.
Loss: mean squared distance of y(1) to a fixed target; a train step is value_and_grad
(reverse mode through the solver, no adjoint) plus an Adam update. Two solvers: Itô
Euler--Maruyama ("euler") and Stratonovich Heun ("heun").

Rows (all in this process, same sizes):

- `torchsde`: `torchsde.sdeint(method="euler"|"heun", dt=1/50)`, default Brownian motion
  (`BrownianInterval`), backprop through the solver (no adjoint), torch CPU threads printed.
- `diffrax+VBT`: plain `diffrax.diffeqsolve` of the joint batch (state (256, 4)) with
  `diffrax.VirtualBrownianTree(tol=1e-3)`.
- `ndes grid joint` / `ndes grid vmap`: `NeuralSDE(num_steps=50)` (GridBrownianPath,
  `ndes.diffeqsolve`), joint batch and per-sample `jax.vmap`.
- `diffrax+grid`: plain `diffrax.diffeqsolve`, joint state, `GridBrownianPath`,
  `RecursiveCheckpointAdjoint(checkpoints=50)` (every step stored, as the scan does and as
  `NeuralSDE` picks for fixed steps).
- `diffrax+grid tuned`: the same with the path checked once (`GridBrownianPath.for_solve`,
  no per-query check) and `max_steps` = checkpoints = 50 (diffrax's no-recomputation path),
  which is what `NeuralSDE` now runs.
- `lax.scan`: a hand-written scan loop doing the same math on the joint state with
  increments drawn at once.

**Latent SDE case** (`latent` rows). `ndes.LatentSDE` vs the same model written for
torchsde, at the sizes of torchsde's latent SDE example (`examples/latent_sde_lorenz.py`:
context 64, hidden 128, MLPs with two hidden layers of 128 and softplus, 50 observation
times on [0, 1], dt = 1e-2, i.e. 100 Euler--Maruyama steps, batch 128) with latent size 4
and data size 1. Both sides: a GRU encoder run backwards over [value, mask, dt] (hidden
128), q(z0) and a piecewise-constant context (64) from its states, posterior drift
MLP([t, z, c]), prior drift MLP([t, z]), diagonal diffusion floor + sigmoid(MLP(z)), linear
decoder with a learned Gaussian scale; one posterior sample per series; loss = -ELBO with
the path KL integrated along the solve (torchsde: `sdeint(..., logqp=True)`); Adam. Rows:
`torchsde`, `ndes grid` (`LatentSDE(num_steps=100)`, the default GridBrownianPath, `elbo`
vmapped over series), `ndes grid joint` / `ndes grid batch vmap` (`LatentSDE.elbo_batch`,
the batch as one state / one solve per series) and `ndes tree` (`brownian="tree"`,
VirtualBrownianTree with the default tol).

All rows of a case are compiled (first call, reported separately) and then timed
round-robin (`benchmarks/_timing.time_interleaved`), so that load drift on a shared machine
affects every row alike; reported: median of >= 20 steps and the ratio to torchsde (and, for
the grid rows, to the `lax.scan` loop). `--quick` runs tiny sizes, Euler--Maruyama and a
tiny latent case without the tree row (compile-bound smoke run). `--tol-sweep` measures how
the cost of an adaptive Heun solve with `VirtualBrownianTree` grows as `tol` shrinks (the basis of
`ndes.models._sde_solve.default_tree_tol`). Run: `python benchmarks/sde_speed.py`.
"""

from __future__ import annotations

import argparse
import os
import platform

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import optax
from _timing import time_interleaved

from ndes._brownian import GridBrownianPath
from ndes.models._latent_sde import LatentSDE
from ndes.models._sde import NeuralSDE


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
        max_steps = steps + 1
        if bm_kind == "tuned":  # checked once (no per-query check), checkpoints == max_steps
            bm = bm.for_solve(0.0, 1.0, 1.0 / steps, diffrax.ConstantStepSize(), solver)
            max_steps = steps
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))
        # The grid row checkpoints every step (as NeuralSDE does for fixed steps); the VBT
        # row keeps diffrax's default adjoint, as a user would.
        checkpoints = None if bm_kind == "vbt" else steps
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)
        sol = diffrax.diffeqsolve(
            terms, solver, 0.0, 1.0, 1.0 / steps, y0, max_steps=max_steps, adjoint=adjoint
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


def latent_data(batch, length, data_size, seed=0):
    """Noisy damped oscillations on [0, 1], (batch, length, data_size), float32."""
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, 1.0, length, dtype=np.float32)
    freq = rng.uniform(2.0, 6.0, (batch, 1, data_size))
    phase = rng.uniform(0.0, 2 * np.pi, (batch, 1, data_size))
    xs = np.exp(-ts[None, :, None]) * np.sin(freq * ts[None, :, None] + phase)
    xs = xs + 0.05 * rng.standard_normal(xs.shape)
    return ts, xs.astype(np.float32)


def ndes_latent_runner(cfg, ts, xs, brownian, batch_mode=None):
    m = LatentSDE(
        cfg["data"],
        cfg["latent"],
        key=jr.PRNGKey(0),
        hidden_size=cfg["hidden"],
        context_size=cfg["context"],
        width=cfg["hidden"],
        depth=cfg["depth"],
        num_steps=cfg["steps"] if brownian == "grid" else None,
        dt0=1.0 / cfg["steps"],
        brownian=brownian,
    )
    ts_j, xs_j = jnp.asarray(ts), jnp.asarray(xs)

    def loss(model, key):
        if batch_mode is not None:  # LatentSDE.elbo_batch: the batch as one state, or vmapped
            return -jnp.mean(model.elbo_batch(ts_j, xs_j, key, batch_mode=batch_mode)[0])
        keys = jr.split(key, xs_j.shape[0])
        elbos = jax.vmap(lambda v, k: model.elbo(ts_j, v, k)[0])(xs_j, keys)
        return -jnp.mean(elbos)

    return jax_trainer(loss, m, list(jr.split(jr.PRNGKey(3), 8)))


def torch_latent_runner(cfg, ts, xs):
    """The same model as `ndes.LatentSDE`, batched the torchsde way (state (B, d))."""
    import torch
    import torchsde
    from torch import nn

    torch.manual_seed(0)
    D, d, H, C, depth, steps = (
        cfg[k] for k in ("data", "latent", "hidden", "context", "depth", "steps")
    )

    def mlp(i, o, final=None):
        layers, w = [], i
        for _ in range(depth):
            layers += [nn.Linear(w, H), nn.Softplus()]
            w = H
        layers.append(nn.Linear(w, o))
        if final is not None:
            layers.append(final)
        return nn.Sequential(*layers)

    class Latent(nn.Module):
        noise_type = "diagonal"
        sde_type = "ito"

        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(2 * D + 1, H)
            self.enc_out = nn.Linear(H, 2 * d)
            self.ctx_out = nn.Linear(H, C)
            self.post = mlp(1 + d + C, d)
            self.prior = mlp(1 + d, d)
            self.diff = mlp(d, d, nn.Sigmoid())
            self.dec = nn.Linear(d, D)
            self.log_obs = nn.Parameter(torch.full((D,), float(np.log(0.1))))
            self._ctx = None

        def _t(self, t, y):
            return torch.as_tensor(t, dtype=y.dtype).expand(y.shape[0], 1)

        def f(self, t, y):  # posterior drift, piecewise-constant context
            ts_, ctx = self._ctx
            i = min(int(torch.searchsorted(ts_, t.reshape(1), right=False)), len(ts_) - 1)
            return self.post(torch.cat([self._t(t, y), y, ctx[i]], dim=1))

        def h(self, t, y):  # prior drift
            return self.prior(torch.cat([self._t(t, y), y], dim=1))

        def g(self, t, y):
            return 1e-2 + self.diff(y)

        def neg_elbo(self, ts_, x):  # x: (T, B, D)
            dts = torch.cat([ts_[1:] - ts_[:-1], torch.zeros(1)])
            inp = torch.cat(
                [x, torch.ones_like(x), dts[:, None, None].expand(-1, x.shape[1], 1)], dim=2
            )
            hs, _ = self.gru(torch.flip(inp, (0,)))
            hs = torch.flip(hs, (0,))  # hs[i] has seen observations i..T-1
            mu, log_std = self.enc_out(hs[0]).chunk(2, dim=1)
            std = log_std.exp()
            z0 = mu + std * torch.randn_like(mu)
            self._ctx = (ts_, self.ctx_out(hs))
            zs, log_ratio = torchsde.sdeint(
                self, z0, ts_, dt=1.0 / steps, logqp=True, method="euler"
            )
            mean = self.dec(zs)
            ll = (
                -0.5 * ((x - mean) / self.log_obs.exp()) ** 2
                - self.log_obs
                - 0.5 * np.log(2 * np.pi)
            )
            ll = ll.sum(dim=(0, 2))
            kl0 = (0.5 * (std**2 + mu**2 - 1.0) - torch.log(std)).sum(dim=1)
            return -(ll - kl0 - log_ratio.sum(dim=0)).mean()

    model = Latent()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ts_t = torch.tensor(ts)
    x_t = torch.tensor(np.swapaxes(xs, 0, 1).copy())

    def run():
        opt.zero_grad()
        loss = model.neg_elbo(ts_t, x_t)
        loss.backward()
        opt.step()

    return run


def tol_sweep(batch, n, width, repeats):
    """Cost of an adaptive joint Heun solve (PIDController rtol=atol=1e-2) with a
    VirtualBrownianTree as tol shrinks: forward + backward, median ms, steps taken."""
    fields = make_fields(n, width)
    y0 = jr.normal(jr.PRNGKey(1), (batch, n), jnp.float32)
    print(
        f"tol sweep: adaptive Heun, PID rtol=atol=1e-2, joint batch {batch}, "
        f"interleaved, median of {repeats}"
    )
    levels = (4, 6, 8, 10, 12, 14, 16, 18, 20)
    fns = []
    for lev in levels:
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
        fns.append(lambda g=g: g(fields, jr.PRNGKey(2)))
    res = time_interleaved(fns, repeats)
    finest = res[-1][2][0][1][0]
    print(f"{'tol':>10s} {'levels':>6s} {'step ms':>9s} {'steps':>6s} {'|y(tol)-y(2^-20)|':>18s}")
    for lev, (med, _, out) in zip(levels, res, strict=True):
        (_, (yT, nsteps)), _ = out
        err = float(jnp.mean(jnp.abs(yT - finest)))
        print(f"{2.0**-lev:10.2e} {lev:6d} {med * 1e3:9.2f} {int(nsteps):6d} {err:18.2e}")


def describe_machine(torch_threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {cpu}, {os.cpu_count()} CPUs, load average {load:.2f} at start; "
        f"jax {jax.__version__} ({jax.default_backend()}), diffrax {diffrax.__version__}, "
        f"equinox {eqx.__version__}; torch threads: {torch_threads}"
    )


def print_case(solver_name, labels, res, ref_label, scan_label=None):
    ref = dict(zip(labels, res, strict=True)).get(ref_label)
    for label, (med, first, _) in zip(labels, res, strict=True):
        ratio = f"{med / ref[0]:.2f}x" if ref else "-"
        print(
            f"{solver_name:6s} {label:20s} {med * 1e3:9.2f} {first:8.2f} {ratio:>12s}", flush=True
        )
    if scan_label is not None:
        by = dict(zip(labels, res, strict=True))
        scan = by[scan_label][0]
        parts = [
            f"{label} {by[label][0] / scan:.3f}x"
            for label in labels
            if label in ("diffrax+grid", "diffrax+grid tuned", "ndes grid joint", "ndes grid vmap")
        ]
        print(f"{solver_name:6s} vs lax.scan: " + ", ".join(parts), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few repeats")
    ap.add_argument("--tol-sweep", action="store_true", help="VirtualBrownianTree cost vs tol")
    ap.add_argument("--no-torch", action="store_true", help="skip the torchsde rows")
    ap.add_argument("--no-latent", action="store_true", help="skip the latent SDE case")
    ap.add_argument("--only-latent", action="store_true", help="only the latent SDE case")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-vCPU machine 2 OpenMP threads were "
        "measured 20x slower, spinning at barriers while the other core is busy)",
    )
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        batch, n, width, steps, repeats = 8, 4, 8, 5, 3
        lat = dict(data=1, latent=2, hidden=8, context=4, depth=1, steps=5, batch=4, length=6)
    else:
        batch, n, width, steps, repeats = 256, 4, 64, 50, 20
        lat = dict(
            data=1, latent=4, hidden=128, context=64, depth=2, steps=100, batch=128, length=50
        )
    if a.repeats is not None:
        repeats = a.repeats
    try:
        import torch

        torch_version = torch.__version__
        if a.torch_threads > 0:
            torch.set_num_threads(a.torch_threads)
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_version, torch_threads = None, None
    describe_machine(torch_threads)
    if a.tol_sweep:
        tol_sweep(batch, n, width, repeats)
        return
    use_torch = torch_version is not None and not a.no_torch

    y0 = jr.normal(jr.PRNGKey(1), (batch, n), jnp.float32)
    target = jnp.ones((batch, n), jnp.float32)
    keys = list(jr.split(jr.PRNGKey(3), 8))
    print(
        f"neural SDE train step: batch {batch}, MLP {n}->{width}->{n} drift and diffusion, "
        f"{steps} steps on [0, 1], float32, Adam; rows interleaved, median of {repeats}."
    )
    print(
        "peers: torchsde "
        + (
            torch_version
            and f"(torch {torch_version}, {torch_threads} threads) sdeint dt=1/{steps}, "
            "BrownianInterval, autograd"
            or "not installed"
        )
        + f"; diffrax {diffrax.__version__} VirtualBrownianTree(tol=1e-3); jax {jax.__version__}"
    )
    print(f"{'solver':6s} {'impl':18s} {'step ms':>9s} {'first s':>8s} {'vs torchsde':>12s}")
    # --quick: the Euler--Maruyama case only (compilation dominates a smoke run).
    solvers = () if a.only_latent else ("euler",) if a.quick else ("euler", "heun")
    for solver_name in solvers:
        fields = make_fields(n, width)
        rows = []
        if use_torch:
            rows.append(("torchsde", torch_runner(solver_name, batch, n, width, steps, y0, target)))
        losses = [
            ("diffrax+VBT", diffrax_loss(solver_name, "vbt", batch, n, steps, y0, target)),
            ("diffrax+grid", diffrax_loss(solver_name, "grid", batch, n, steps, y0, target)),
            ("diffrax+grid tuned", diffrax_loss(solver_name, "tuned", batch, n, steps, y0, target)),
            ("ndes grid joint", ndes_loss(solver_name, "joint", steps, y0, target)),
            ("ndes grid vmap", ndes_loss(solver_name, "vmap", steps, y0, target)),
            ("lax.scan", scan_loss(solver_name, batch, n, steps, y0, target)),
        ]
        rows += [(label, jax_trainer(loss, fields, keys)) for label, loss in losses]
        labels = [r[0] for r in rows]
        res = time_interleaved([r[1] for r in rows], repeats)
        print_case(solver_name, labels, res, "torchsde", "lax.scan")

    if a.no_latent:
        return
    ts, xs = latent_data(lat["batch"], lat["length"], lat["data"])
    print(
        f"latent SDE train step (-ELBO, one posterior sample per series): batch {lat['batch']}, "
        f"{lat['length']} times on [0, 1], data {lat['data']}, latent {lat['latent']}, context "
        f"{lat['context']}, GRU hidden and MLP width {lat['hidden']} (depth {lat['depth']}, "
        f"softplus), Euler--Maruyama {lat['steps']} steps, float32, Adam; interleaved, median "
        f"of {repeats}."
    )
    rows = []
    if use_torch:
        rows.append(("torchsde", torch_latent_runner(lat, ts, xs)))
    rows.append(("ndes grid", ndes_latent_runner(lat, ts, xs, "grid")))
    rows.append(("ndes grid joint", ndes_latent_runner(lat, ts, xs, "grid", "joint")))
    if not a.quick:
        rows.append(("ndes grid batch vmap", ndes_latent_runner(lat, ts, xs, "grid", "vmap")))
    if not a.quick:  # --quick: one compile fewer
        rows.append(("ndes tree", ndes_latent_runner(lat, ts, xs, "tree")))
    labels = [r[0] for r in rows]
    res = time_interleaved([r[1] for r in rows], repeats)
    print_case("latent", labels, res, "torchsde")


if __name__ == "__main__":
    main()
