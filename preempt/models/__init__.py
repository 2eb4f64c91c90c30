"""Models: the :class:`Model` protocol, architectures, the preprocessing wrapper, loading."""
from .architectures import build
from .architectures import names as architecture_names
from .files import ModelError
from .protocol import Model
from .registry import (
                       DEFAULT_MODEL,
                       FMNIST_MODEL,
                       IMAGENET_MODEL,
                       bundled,
                       default_model_name,
                       from_card,
                       imagenet_available,
                       load_model,
                       save_model,
)
from .resample import Resampling
from .wrapper import Classifier, Preprocessing

__all__ = ["Model", "build", "architecture_names", "Classifier", "Preprocessing", "Resampling", "load_model",
           "save_model", "from_card", "bundled", "default_model_name", "imagenet_available", "DEFAULT_MODEL",
           "IMAGENET_MODEL", "FMNIST_MODEL", "ModelError"]
