"""The `ndes` command line: `ndes demo`, `ndes train CONFIG.toml`, `ndes plot RUN_DIR`,
`ndes info`.

- `_parser.py`: the argument parser and the commands (`main` is the console script).
- `_schema.py`, `_config.py`: the declarative schema of a `ndes train` TOML file (pydantic
  models, one per table; `TrainConfig` joins them) and its errors (`ConfigError`).
- `_jobs.py`: the job builders, one per `data.name` and per `model.type`, that turn a
  validated config into what `ndes.fit` needs.
- `_demo.py`: `ndes demo`, vanilla vs regularized neural-ODE digits classifiers.

Exit codes: 0 success, 1 a failure while running (e.g. a corrupted checkpoint), 2 a usage or
configuration error (one line on stderr naming the problem), 130 interrupted by Ctrl-C
(`ndes train` saves a checkpoint first; continue with `--resume`).
"""

from ._config import ConfigError as ConfigError
from ._config import TrainConfig as TrainConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._parser import build_parser as build_parser
from ._parser import main as main

__all__ = ["main", "build_parser", "ConfigError", "TrainConfig", "load_config", "parse_config"]
