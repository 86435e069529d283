"""Atomic, verifiable checkpoints of a `TrainState`.

Layout of a checkpoint directory (one pair of files per saved step):

    step_000000100.eqx    the leaves of the TrainState (eqx.tree_serialise_leaves)
    step_000000100.json   metadata: step, sha256 and size of the .eqx file, config hash,
                          the array structure (path, shape, dtype of every leaf), versions

A checkpoint exists if and only if its `.json` file exists: the leaves are written to a
temporary file and moved into place with `os.replace` first, the metadata second, so a
crash at any point leaves either the complete new checkpoint or none of it (plus, at
worst, an orphan `.eqx` with no `.json`, which is ignored and may be overwritten, and a
temporary file `.step_<step>.<eqx|json>.tmp-<pid>` of the killed writer, which the next
`save_checkpoint` in that directory removes once process `<pid>` no longer runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._state import TrainState, array_signature

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
]

FORMAT = "ndes-checkpoint/1"
_NAME = re.compile(r"^step_(\d{9,})\.json$")
# The temporary files of `_write_atomic` for a checkpoint's two files.
_TEMP = re.compile(r"^\.step_\d{9,}\.(?:eqx|json)\.tmp-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupted, truncated, or written for a different
    model/optimiser structure. The message names the file and the fix; the file is never
    modified."""


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("ndes", "jax", "jaxlib", "equinox", "optax", "diffrax"):
        try:
            out[pkg] = _metadata.version(pkg)
        except _metadata.PackageNotFoundError:
            pass
    return out


def _stem(step: int) -> str:
    return f"step_{step:09d}"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in `directory` as `(step, metadata path)`, oldest first.

    **Arguments:** `directory`: a checkpoint directory (may not exist).

    **Returns:** a list sorted by step; only steps whose `.json` metadata exists count.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The metadata path of the newest complete checkpoint in `directory`, or `None`."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


# Crash testing (tests/test_kill.py): `NDES_CHECKPOINT_PAUSE="<step>:<point>:<marker file>"`
# makes the writer of checkpoint <step> create <marker file> and sleep at <point>: "tmp" (half
# of the leaves written to the temporary file), "leaves" (leaves in place, no metadata yet)
# or "meta" (half of the metadata written), so a test can SIGKILL (or SIGINT) it there
# deterministically. It pauses once: not when <marker file> exists already.
_PAUSE_ENV = "NDES_CHECKPOINT_PAUSE"


def _maybe_pause(step: int, point: str) -> None:
    spec = os.environ.get(_PAUSE_ENV)
    if not spec:
        return
    at_step, at_point, marker = spec.split(":", 2)
    if int(at_step) == step and at_point == point and not Path(marker).exists():
        Path(marker).write_text(f"{step}:{point}\n")
        time.sleep(3600)


def _write_atomic(path: Path, data: bytes, *, pause: tuple[int, str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if pause is not None:
                f.write(data[: len(data) // 2])
                f.flush()
                _maybe_pause(*pause)
                f.write(data[len(data) // 2 :])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (`kill(pid, 0)` sends no signal)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:  # cannot tell: keep its files
        return True
    return True


def _remove_stale_temps(
    directory: str | os.PathLike, pattern: re.Pattern[str] = _TEMP
) -> list[Path]:
    """Delete the temporary files left in `directory` by writers that died mid-write (e.g.
    SIGKILL), and return their paths.

    Only names matching `pattern`, whose group 1 is the writer's pid (default: the
    `.step_<step>.eqx.tmp-<pid>` / `.step_<step>.json.tmp-<pid>` that `save_checkpoint`
    writes before its atomic `os.replace`; the metrics log passes its own) are considered,
    and only when process `<pid>` is not this one and no longer exists; complete checkpoints, orphan
    `.eqx` files and every other file are never touched. The check is by process id on this
    machine, so a directory shared by writers on several machines is not supported (nor is
    it otherwise: the step names would collide).
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = pattern.match(p.name)
        if m is None or not p.is_file():
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            p.unlink()
        except FileNotFoundError:  # removed concurrently
            continue
        removed.append(p)
    return sorted(removed)


def _to_host(state: TrainState) -> TrainState:
    return jax.tree_util.tree_map(
        lambda x: np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x, state
    )


def save_checkpoint(
    directory: str | os.PathLike,
    state: TrainState,
    *,
    config_hash: str = "",
    keep_last: int | None = 3,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `state` as checkpoint `step_<state.step>` in `directory`, atomically.

    **Arguments:**

    - `directory`: created if missing.
    - `state`: the `TrainState` to save (arrays are gathered to the host).
    - `config_hash`: a hash of the run's configuration, stored in the metadata.
    - `keep_last`: after a successful write, delete all but the newest `keep_last`
      checkpoints (`None` keeps all).
    - `extra`: JSON-serialisable values to store in the metadata (e.g. elapsed time).

    **Returns:** the path of the metadata (`.json`) file.

    Raises `CheckpointError` if a complete checkpoint for this step already exists
    (checkpoints are never overwritten). If writing fails part-way (disk full, a crash,
    an exception from `os.replace`), the previous checkpoints are untouched. Before
    writing, the temporary files `.step_*.tmp-<pid>` left in `directory` by writers that
    were killed mid-write (process `<pid>` no longer running) are removed, so a resumed
    run does not accumulate them; finished checkpoints are never touched.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last={keep_last} must be >= 1 or None (keep every checkpoint).")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(d)
    step = int(state.step)
    stem = _stem(step)
    leaves_path, meta_path = d / f"{stem}.eqx", d / f"{stem}.json"
    if meta_path.exists():
        raise CheckpointError(
            f"checkpoint {meta_path} already exists and will not be overwritten; remove it "
            "or use another checkpoint directory."
        )
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, _to_host(state))
    data = buf.getvalue()
    meta = {
        "format": FORMAT,
        "step": step,
        "leaves_file": leaves_path.name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "config_hash": config_hash,
        "structure": array_signature(state),
        "versions": _versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    _write_atomic(leaves_path, data, pause=(step, "tmp"))
    _maybe_pause(step, "leaves")
    _write_atomic(meta_path, (json.dumps(meta, indent=1) + "\n").encode(), pause=(step, "meta"))
    if keep_last is not None:
        for _, old in list_checkpoints(d)[:-keep_last]:
            # Metadata first: a checkpoint without metadata no longer counts.
            old.unlink(missing_ok=True)
            old.with_suffix(".eqx").unlink(missing_ok=True)
    return meta_path


def _fix(meta_path: Path) -> str:
    others = [p.name for s, p in list_checkpoints(meta_path.parent) if p != meta_path]
    earlier = f" (earlier checkpoints there: {', '.join(others)})" if others else ""
    return (
        f"To resume from an earlier checkpoint delete {meta_path.name} and "
        f"{meta_path.with_suffix('.eqx').name}{earlier}; to start afresh pass resume=False "
        "with an empty checkpoint_dir. The file was left unchanged."
    )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict of one checkpoint, read without loading (or verifying) its leaves.

    **Arguments:** `path`: the checkpoint's `.json` metadata file or its `.eqx` leaves file
    (the suffix is replaced by `.json`); not a directory (use `latest_checkpoint` first).

    **Returns:** the parsed JSON dict as `save_checkpoint` wrote it: `"format"`
    (`"ndes-checkpoint/1"`), `"step"` (int), `"leaves_file"` (the `.eqx` name), `"size"`
    (bytes) and `"sha256"` (hex) of the leaves file, `"config_hash"`, `"structure"` (a
    list of `[path, shape, dtype]` per array leaf), `"versions"` (package -> version),
    `"saved_at"` (UTC, ISO 8601), plus any `extra` keys given to `save_checkpoint`.

    Raises `CheckpointError`, naming the file and the fix, when the metadata file is
    missing, is not valid JSON, or is not an ndes checkpoint of this format.
    """
    meta_path = Path(path).with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint metadata {meta_path} does not exist; pass a checkpoint's .json/.eqx "
            "path or a directory containing step_*.json files."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"checkpoint metadata {meta_path} is corrupted ({e}). {_fix(meta_path)}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{meta_path} is not an ndes checkpoint (format {FORMAT!r} expected). {_fix(meta_path)}"
        )
    return meta


def load_checkpoint(path: str | os.PathLike, like: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """Read a checkpoint, verifying its integrity and structure first.

    **Arguments:**

    - `path`: a checkpoint directory (its newest checkpoint is read), or the `.json` /
      `.eqx` file of one checkpoint.
    - `like`: a `TrainState` of the same structure (e.g. `init_state(model, optimizer,
      key)` with the model built with the same hyperparameters); its non-array leaves are
      kept, its arrays replaced.

    **Returns:** `(state, metadata)`.

    Raises `CheckpointError`, naming the file and the fix, when the file is missing,
    truncated or corrupted (size and sha256 are checked), or when its array structure
    (paths, shapes, dtypes) differs from `like`.
    """
    p = Path(path)
    if not p.exists() and p.suffix not in (".json", ".eqx"):
        raise CheckpointError(
            f"no checkpoint found at {p}: there is no such directory or checkpoint file."
        )
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(f"no checkpoint (step_*.json) found in directory {p}.")
        p = latest
    meta_path = p.with_suffix(".json")
    meta = read_metadata(meta_path)
    leaves_path = meta_path.with_name(meta.get("leaves_file", meta_path.stem + ".eqx"))
    try:
        data = leaves_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {leaves_path} is missing although its metadata {meta_path.name} "
            f"exists. {_fix(meta_path)}"
        ) from None
    if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        what = "truncated" if len(data) < meta["size"] else "corrupted"
        raise CheckpointError(
            f"checkpoint {leaves_path} is {what}: {len(data)} bytes with sha256 "
            f"{hashlib.sha256(data).hexdigest()[:12]}..., the metadata records {meta['size']} "
            f"bytes with sha256 {meta['sha256'][:12]}.... {_fix(meta_path)}"
        )
    expected = array_signature(like)
    found = meta.get("structure")
    if found != expected:
        raise CheckpointError(
            f"checkpoint {leaves_path} was written for a different model/optimiser structure: "
            f"{_first_difference(expected, found)}. Build the model (and optimiser) with the "
            "same hyperparameters as the run that wrote it, or start a fresh run in another "
            "checkpoint_dir (resume=False). The file was left unchanged."
        )
    try:
        state = eqx.tree_deserialise_leaves(io.BytesIO(data), like)
    except Exception as e:  # pragma: no cover - structure is checked above
        raise CheckpointError(
            f"checkpoint {leaves_path} could not be read into the given state ({e}). "
            f"{_fix(meta_path)}"
        ) from e
    return state, meta


def _first_difference(expected: list, found: Any) -> str:
    if not isinstance(found, list):
        return "its metadata has no structure record"
    for e, f in zip(expected, found, strict=False):
        if e != f:
            return (
                f"leaf {e[0]} has shape {tuple(e[1])} dtype {e[2]} in the state given to fit "
                f"but the checkpoint has {f[0]} with shape {tuple(f[1])} dtype {f[2]}"
            )
    return (
        f"the state given to fit has {len(expected)} array leaves but the checkpoint has "
        f"{len(found)}"
    )
