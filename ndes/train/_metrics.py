"""Metrics as JSON lines: one object per logged step."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._checkpoint import _remove_stale_temps

__all__ = ["read_metrics", "MetricsWriter"]


def _clean(x: Any) -> Any:
    """JSON-safe: floats stay floats, NaN/inf become null (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    f = float(x)
    return f if math.isfinite(f) else None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics JSONL file written by `ndes.fit`.

    **Arguments:** `path`: the `.jsonl` file.

    **Returns:** one dict per line, in file order. A final partial line (a run killed
    mid-write) is skipped.
    """
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _lines_upto(path: Path, step: int) -> Iterator[str]:
    for rec in read_metrics(path):
        if rec.get("step", 0) <= step:
            yield json.dumps(rec)


class MetricsWriter:
    """Appends one JSON object per line to `path`, flushing every line.

    On resume (`resume_step` given) the lines logged after the checkpoint's step by the
    interrupted run are dropped first (the file is rewritten atomically), so the log of a
    resumed run equals the log of an uninterrupted one apart from wall times.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.previous: list[dict[str, Any]] = []
        if resume_step is not None:  # a resume rewrite killed before its os.replace
            own = re.compile(rf"^\.{re.escape(self.path.name)}\.tmp-(\d+)$")
            _remove_stale_temps(self.path.parent, own)
        if resume_step is not None and self.path.exists():
            kept = list(_lines_upto(self.path, resume_step))
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
            self.previous = [json.loads(line) for line in kept]
        elif resume_step is None and self.path.exists() and self.path.stat().st_size > 0:
            raise FileExistsError(
                f"metrics log {self.path} already exists; pass resume=True to continue that "
                "run, or choose another log_path/run_dir (logs are never overwritten)."
            )
        self._f = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(_clean(record)) + "\n")
        self._f.flush()

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        self._f.close()
