"""Training: `fit` (a resumable, data-parallel loop for any Equinox model), the cost-budget
weight, checkpoints, metrics and sharding helpers. See docs/training.md."""

from ._aux import solution_aux as solution_aux
from ._budget import BudgetState as BudgetState
from ._budget import BudgetWeight as BudgetWeight
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import latest_checkpoint as latest_checkpoint
from ._checkpoint import list_checkpoints as list_checkpoints
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import read_metadata as read_metadata
from ._checkpoint import save_checkpoint as save_checkpoint
from ._cnf_loss import cnf_nll_loss as cnf_nll_loss
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._losses import classification_loss as classification_loss
from ._metrics import read_metrics as read_metrics
from ._sharding import data_parallel_mesh as data_parallel_mesh
from ._sharding import replicate as replicate
from ._sharding import shard_batch as shard_batch
from ._state import TrainState as TrainState
from ._state import init_state as init_state

__all__ = [
    "fit",
    "FitResult",
    "BudgetWeight",
    "BudgetState",
    "solution_aux",
    "classification_loss",
    "cnf_nll_loss",
    "TrainState",
    "init_state",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "read_metadata",
    "CheckpointError",
    "read_metrics",
    "data_parallel_mesh",
    "shard_batch",
    "replicate",
]
