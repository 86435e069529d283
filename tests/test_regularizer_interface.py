"""The one regularizer interface: new regularizers defined here (not in ndes/) work in
`ndes.diffeqsolve`, `ndes.NeuralODE` (joint and vmap) and `ndes.fit`; the class hierarchy is
abstract-or-final; `_solve.py` dispatches on mechanisms only."""

import ast
import dataclasses
import importlib
import inspect
import pathlib
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes
import ndes.regularizers as R

from .helpers import linear_term

A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
Y0 = jnp.array([1.0, 0.5])


# ---- three brand-new regularizers, one per mechanism ------------------------------------


class StateIncrement(ndes.AbstractStepRegularizer):
    """Sum over accepted steps of ||y_{j+1} - y_j||^2 (one trajectory; the base class vmaps
    it over a joint batch and aggregates it)."""

    weight: float = 1.0
    aggregate: str = eqx.field(default="sum", static=True)
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def bind(self, problem):
        return self

    def step_value(self, info):
        leaves = zip(jax.tree.leaves(info.y0), jax.tree.leaves(info.y1), strict=True)
        return sum(jnp.sum((b - a) ** 2) for a, b in leaves)


class LocalStateIncrement(ndes.AbstractLocalRegularizer):
    """The same step value on one extra step from a sampled time."""

    weight: float = 1.0
    sampling: str = eqx.field(default="unbiased", static=True)
    key: jax.Array | None = None
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def estimate(self):
        return StateIncrement(self.weight, batch_axis=self.batch_axis, batch_size=self.batch_size)


class SquaredState(ndes.AbstractIntegralRegularizer):
    """The integral of ||y(t)||^2 dt (the batch sum: the base class divides by the batch)."""

    weight: float = 1.0
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    needs_vjp: ClassVar[bool] = False

    def bind(self, problem):
        if not isinstance(problem.solver, diffrax.Tsit5):
            raise ValueError("SquaredState: only tested with diffrax.Tsit5(); use that.")
        return self

    def rate(self, t, y, args, field, fy, vjp_fn, field_rates):
        return jnp.sum(y**2)


def _solve(regs, y0=Y0, ctrl=None, dt0=0.1, term=None, solver=None, saveat=None):
    return ndes.diffeqsolve(
        linear_term(A) if term is None else term,
        diffrax.Tsit5() if solver is None else solver,
        0.0,
        3.0,
        dt0,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9) if ctrl is None else ctrl,
        saveat=diffrax.SaveAt(t0=True, steps=True) if saveat is None else saveat,
        regularizers=regs,
    )


def test_new_step_regularizer_in_diffeqsolve():
    reg = StateIncrement(0.5)
    sol = _solve((reg,))
    plain = _solve(())
    ys = np.asarray(sol.ys)
    ys = ys[np.all(np.isfinite(ys), axis=-1)]  # the accepted steps' states
    want = np.sum(np.diff(ys, axis=0) ** 2)
    np.testing.assert_allclose(float(sol.penalty_terms["StateIncrement"]), want, rtol=1e-10)
    np.testing.assert_allclose(float(sol.penalty), 0.5 * want, rtol=1e-10)
    # Neutral: same steps and states as without it.
    np.testing.assert_array_equal(np.asarray(sol.ys), np.asarray(plain.ys))
    assert int(sol.stats["num_fevals"]) == int(plain.stats["num_fevals"])
    # Its aggregate and gradient come from the base class.
    mx = _solve((StateIncrement(1.0, aggregate="max"),))
    np.testing.assert_allclose(
        float(mx.penalty), np.max(np.sum(np.diff(ys, axis=0) ** 2, axis=-1)), rtol=1e-10
    )
    g = jax.grad(lambda y: _solve((reg,), y0=y, ctrl=diffrax.ConstantStepSize()).penalty)(Y0)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


def test_new_local_and_integral_regularizers_in_diffeqsolve():
    sol = _solve((LocalStateIncrement(1.0, key=jax.random.key(0)),), saveat=diffrax.SaveAt(t1=True))
    t_s, h = float(sol.stats["local_sample_time"]), float(sol.stats["local_step_size"])
    assert 0.0 <= t_s <= 3.0 and h > 0
    # The extra step's value is StateIncrement's term of the one step [t_s, t_s + h].
    one = ndes.diffeqsolve(
        linear_term(A),
        diffrax.Tsit5(),
        t_s,
        t_s + h,
        h,
        jax.scipy.linalg.expm(A * t_s) @ Y0,
        regularizers=(StateIncrement(1.0),),
    )
    np.testing.assert_allclose(
        float(sol.penalty_terms["LocalStateIncrement"]), float(one.penalty), rtol=1e-6
    )
    # The integral of ||y||^2 against the closed form: y(t) = expm(A t) y0 decays like e^{-t/2}
    # and rotates, so ||y(t)||^2 = e^{-t} ||y0||^2.
    integral = _solve((SquaredState(1.0),), saveat=diffrax.SaveAt(t1=True))
    want = float(jnp.sum(Y0**2)) * (1 - np.exp(-3.0))
    np.testing.assert_allclose(float(integral.penalty_terms["SquaredState"]), want, rtol=1e-5)
    with pytest.raises(ValueError, match="SquaredState: only tested with"):
        _solve((SquaredState(1.0),), solver=diffrax.Dopri5())


@pytest.mark.parametrize("make", [StateIncrement, SquaredState], ids=["step", "integral"])
def test_new_regularizer_in_neural_ode_joint_equals_vmap(getkey, make):
    """Joint mode sets the batch axis through the interface (`per_trajectory`); with a shared
    step sequence the joint value is the batch mean of the per-sample values."""
    field = ndes.MLPVectorField(2, 8, 1, key=getkey(), activation=jnp.tanh)
    kw = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1)
    ts = jnp.linspace(0.0, 1.0, 6)
    y0 = jnp.array([[1.0, 0.5], [-0.3, 2.0], [0.1, 0.1]])
    regs = (make(1.0),)
    joint = ndes.NeuralODE(field, batch_mode="joint", **kw)(ts, y0, regularizers=regs)
    vmap = ndes.NeuralODE(field, batch_mode="vmap", **kw)(ts, y0, regularizers=regs)
    name = make.__name__
    assert float(vmap.penalty_terms[name]) > 0
    np.testing.assert_allclose(
        float(joint.penalty_terms[name]), float(vmap.penalty_terms[name]), rtol=1e-10
    )
    np.testing.assert_allclose(np.asarray(joint.ys), np.asarray(vmap.ys), rtol=1e-12)


def test_new_regularizer_in_fit(getkey):
    """`ndes.fit` logs the new penalty term and, with a large weight, reduces it."""
    field = ndes.MLPVectorField(2, 16, 1, key=getkey(), activation=jnp.tanh)
    model = ndes.NeuralODE(field, stepsize_controller=diffrax.ConstantStepSize(), dt0=0.25)
    ts = jnp.linspace(0.0, 1.0, 5)
    y0 = jax.random.normal(getkey(), (16, 2))

    def loss_fn(model, batch, *, key, regularizers, train_step):
        out = model(ts, batch, regularizers=regularizers, train_step=train_step)
        return 0.0 * jnp.mean(out.ys), ndes.train.solution_aux(out)  # the penalty only

    result = ndes.fit(
        model,
        y0,
        loss_fn,
        optax.adam(3e-2),
        key=jax.random.key(0),
        batch_size=16,
        steps=15,
        regularizers=(StateIncrement(1.0), LocalStateIncrement(1.0, key=jax.random.key(1))),
        progress=False,
        shuffle=False,
    )
    first, last = result.history[0], result.history[-1]
    assert set(first["penalty_terms"]) == {"StateIncrement", "LocalStateIncrement"}
    assert last["penalty_terms"]["StateIncrement"] < 0.8 * first["penalty_terms"]["StateIncrement"]


# ---- the hierarchy ------------------------------------------------------------------------


def _classes():
    out = set()
    for mod in (ndes, R):
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, R.AbstractRegularizer | R.AbstractEndTime):
                out.add(obj)
    return out | {StateIncrement, LocalStateIncrement, SquaredState}


def _is_abstract(cls) -> bool:
    return bool(getattr(cls, "__abstractmethods__", ())) or cls.__name__.startswith("Abstract")


def test_abstract_or_final():
    classes = _classes()
    assert {ndes.ErrorEstimate, ndes.LocalStiffnessEstimate, ndes.RandomEndTime} <= classes
    for cls in classes:
        bases = [b for b in cls.__mro__[1:] if b in classes or b.__name__.startswith("Abstract")]
        if _is_abstract(cls):
            # Abstract: no fields of its own, only AbstractVars (the final classes declare them).
            for f in dataclasses.fields(cls):
                assert "eqx.Abstract" in str(f.type), (cls, f.name)  # Var or ClassVar
            continue
        # Final: nothing subclasses it, and no concrete method of an abstract base is overridden.
        assert not any(c is not cls and issubclass(c, cls) for c in classes), cls
        for base in bases:
            for name, member in vars(base).items():
                if name.startswith("__") or getattr(member, "__isabstractmethod__", False):
                    continue
                if callable(member) or isinstance(member, property):
                    assert vars(cls).get(name, member) is member, f"{cls.__name__}.{name}"


def test_solve_imports_no_concrete_regularizer():
    src = pathlib.Path(inspect.getfile(ndes._solve)).read_text()
    imported = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and "regularizers" in (node.module or ""):
            module = importlib.import_module(f"ndes.{node.module}")
            imported += [(a.name, getattr(module, a.name)) for a in node.names]
    assert imported  # it does use the regularizer layer
    for name, obj in imported:
        if isinstance(obj, type) and issubclass(obj, R.AbstractRegularizer | R.AbstractEndTime):
            assert _is_abstract(obj), name


def test_interface_errors():
    class NoMechanism(ndes.AbstractRegularizer):
        weight: float = 1.0
        batch_axis: None = None
        batch_size: None = None

        def bind(self, problem):
            return self

    with pytest.raises(TypeError, match="none of its mechanisms"):
        _solve((NoMechanism(),))
    with pytest.raises(ValueError, match=r"StateIncrement\(aggregate='median'\)"):
        StateIncrement(aggregate="median")
    with pytest.raises(ValueError, match="needs batch_size="):
        StateIncrement(aggregate="max", batch_axis=0)
    with pytest.raises(ValueError, match="LocalStateIncrement.*needs key="):
        LocalStateIncrement(1.0)
    with pytest.raises(ValueError, match=r"SquaredState\(weight=-1\.0\)"):
        SquaredState(-1.0)
    with pytest.raises(ValueError, match="batch_axis=-2"):
        SquaredState(batch_axis=-2)
    with pytest.raises(ValueError, match=r"SquaredState: batch_size='4' must be an int >= 1"):
        SquaredState(batch_axis=0, batch_size="4")
    with pytest.raises(ValueError, match=r"batch_size=0 must be an int >= 1"):
        SquaredState(batch_axis=0, batch_size=0)
    # per_trajectory sets and clears the batch axis; the end time is shared by a joint batch.
    r = StateIncrement(aggregate="max").per_trajectory(4)
    assert (r.batch_axis, r.batch_size) == (0, 4)
    assert r.per_trajectory(None).batch_axis is None
    end = ndes.RandomEndTime(0.1, key=jax.random.key(0))
    assert end.per_trajectory(4) is end
