import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's time is mostly XLA compiling many small programs, each run a few times: LLVM at
# -O0 compiles them faster (measured: a SDE + local-regularizer test pair 181 s -> 156 s) and
# changes no float semantics (fast-math stays off). Set before JAX starts its backend; a
# caller's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402
import pytest  # noqa: E402

# Numeric checks run in float64; tests that exercise float32 say so explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """A fresh PRNG key per call, deterministic per test (cf. equinox's tests/conftest.py)."""
    state = {"key": jax.random.key(0)}

    def _getkey():
        state["key"], sub = jax.random.split(state["key"])
        return sub

    return _getkey


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compilation caches after each test module: the compiled code of finished
    tests otherwise stays mapped, and one long-lived worker running most of the suite
    crashed in XLA's compiler near the kernel's memory-map limit (vm.max_map_count)."""
    yield
    jax.clear_caches()
