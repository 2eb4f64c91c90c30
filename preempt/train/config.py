"""What ``preempt train`` trains with: :class:`TrainConfig` (method, data, attack, optimiser, schedule, validation)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..vocab import SCHEDULES
from .methods import METHODS


@dataclass
class TrainConfig:
    method: str = "standard"
    dataset: str = "fashion-mnist"
    data: str | None = None
    arch: str = "cnn"
    width: int = 32
    norm: str = "linf"
    eps: float = 0.1
    delta: float | None = None   # robustification budget δ (preempt); None: equal to ε
    steps: int = 10              # attack steps while training (pgd-at, preempt)
    step_size: float | None = None
    delta_steps: int = 2         # preempt: signed descent steps that find x̂_r
    preempt_direction: str = "descent"
    sigma: float = 0.25          # gaussian
    fgsm_alpha: float = 0.5      # fgsm
    replays: int = 4             # free-at
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"     # cosine | constant | step (×0.1 at 50% and 75% of the epochs: Rice et al. 2020)
    val_size: int = 2000
    val_attack_steps: int = 10
    val_attack_size: int = 500
    early_stop: bool = False     # keep the epoch with the best robust validation accuracy
    curve_size: int = 0          # > 0: also log clean and PGD accuracy on the first N training and N test images
                                 # every epoch (the learning curves of robust overfitting)
    attack_bn: str = "train"     # BatchNorm mode while crafting training attacks: train | eval
    image_size: int = 32         # ImageFolder: images are resized to this
    channels: int = 3            # ImageFolder: 1 (grey) or 3
    limit: int | None = None     # use only the first N training images (tests, quick runs)
    labelled: int | None = None  # keep the labels of only the first N training images (D); the rest (D̃) get
                                 # ``pseudo_labeller``'s predictions instead (Carmon et al. 2019, Uesato et al. 2019)
    unlabelled: int | None = None  # with ``labelled``: use at most M images of D̃ (None: all of them)
    pseudo_labeller: str | None = None  # a model name or weights file trained on D alone
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.delta is None:
            self.delta = self.eps
        if self.method not in METHODS:
            raise UsageError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if (self.labelled is None) != (self.pseudo_labeller is None):
            raise UsageError("labelled and pseudo_labeller go together: the labelled subset D and the model, "
                             "trained on D alone, that labels the rest")
        if self.labelled is not None and self.limit is not None:
            raise UsageError("labelled and limit exclude each other (limit would drop the unlabelled images)")
        if self.labelled is not None and self.labelled < 1:
            raise UsageError(f"labelled must be at least 1, got {self.labelled}")


def dataset_kw(cfg: TrainConfig) -> dict:
    return {"size": cfg.image_size, "channels": cfg.channels} if cfg.dataset == "folder" else {}
