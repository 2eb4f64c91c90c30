"""preempt: preemptive robustification of photos (Moon, Lee & Song, AAAI 2022)."""
from .algorithms.robustify import RobustifyConfig, RobustifyResult, robustify
from .core.threat import L2, Linf, ThreatModel, threat_model
from .models import load_model
from .pipeline.photos import load_image, save_image
from .version import __version__

__all__ = ["robustify", "RobustifyConfig", "load_image", "save_image", "RobustifyResult", "load_model", "Linf", "L2",
           "ThreatModel",
           "threat_model", "__version__"]
