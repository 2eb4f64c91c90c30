"""Models: architectures, the preprocessing wrapper, bundled weights."""
from .architectures import build, names as architectures
from .registry import DEFAULT_MODEL, ModelError, bundled, default_model_name, from_card, load_model, save_model
from .wrapper import Classifier, Preprocessing

__all__ = ["build", "architectures", "Classifier", "Preprocessing", "load_model", "save_model", "from_card",
           "bundled", "default_model_name", "DEFAULT_MODEL", "ModelError"]
