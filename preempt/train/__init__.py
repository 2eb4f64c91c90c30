"""Training: preemptively robust training and the usual baselines."""
from .loop import TrainConfig, TrainResult, accuracy, robust_accuracy, train
from .methods import METHODS

__all__ = ["TrainConfig", "TrainResult", "train", "accuracy", "robust_accuracy", "METHODS"]
