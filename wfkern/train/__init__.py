"""Train the original classifier; model checkpoints; torchrun plumbing."""

from wfkern.train.checkpoint import ModelConfig, load_checkpoint, read_checkpoint_config, save_checkpoint
from wfkern.train.distributed import DistContext, dist_context, init_distributed
from wfkern.train.trainer import TrainResult, evaluate_accuracy, train_model

__all__ = ["ModelConfig", "load_checkpoint", "read_checkpoint_config", "save_checkpoint",
           "DistContext", "dist_context", "init_distributed",
           "TrainResult", "evaluate_accuracy", "train_model"]
