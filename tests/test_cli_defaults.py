"""No policy in the CLI: every default a command shows is the library's (its config's field, or the keyword of the
library function it calls), or None, which the library resolves (the model card's, else the config's)."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from preempt.algorithms.robustify import RobustifyConfig
from preempt.algorithms.robustify.parts import Persistent
from preempt.cli import robustify as robustify_cli
from preempt.cli import train as train_cli
from preempt.cli import verify as verify_cli
from preempt.defenses.smoothing import Smoothed
from preempt.pipeline import VerifyConfig, robustify_files, verify_files
from preempt.train import TrainConfig
from preempt.train.generative import DefenseTrainConfig

NOT_A_SETTING = {"paths", "out", "original", "model", "weights", "card", "input_size", "resize_policy", "resize_size",
                 "mean", "std", "channels", "shard", "json_out", "json_file", "report", "run_dir", "resume",
                 "recalibrate", "reencode", "resize", "surrogate", "sigma"}  # inputs and outputs, not algorithm settings
ALIASES = {"temperature": "jsd_temperature", "noise_samples": "samples"}


def _cli_defaults(fn) -> dict:
    out = {}
    for name, p in inspect.signature(fn, eval_str=True).parameters.items():
        d = p.default
        if d is inspect.Parameter.empty:  # an Annotated option: its default is the parameter's own
            continue
        out[name] = getattr(d, "default", d)
    return out


def _library_defaults(*sources) -> dict:
    """Field or keyword -> default, the first source that declares it winning (a config first, then functions)."""
    out: dict = {}
    for src in sources:
        if isinstance(src, dict):
            for name, v in src.items():
                out.setdefault(name, v)
        elif dataclasses.is_dataclass(src):
            for f in dataclasses.fields(src):
                if f.default is not dataclasses.MISSING:
                    out.setdefault(f.name, f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    out.setdefault(f.name, f.default_factory())
        else:
            for name, p in inspect.signature(src).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    out.setdefault(name, p.default)
    return out


@pytest.mark.parametrize("command, sources", [
    (robustify_cli.robustify_cmd, (RobustifyConfig().flat(), RobustifyConfig(inner=Persistent()).flat(), robustify_files,
                                   Smoothed.__init__)),
    (verify_cli.verify_cmd, (VerifyConfig, verify_files)),
    (train_cli.train_cmd, (TrainConfig, DefenseTrainConfig)),
], ids=["robustify", "verify", "train"])
def test_every_cli_default_is_the_librarys(command, sources):
    cli, lib = _cli_defaults(command), _library_defaults(*sources)
    lib["check_steps"] = RobustifyConfig().check.steps  # --check-steps is the check's PGD steps
    unknown, differs = [], []
    for name, default in cli.items():
        if name in NOT_A_SETTING:
            continue
        key = ALIASES.get(name, name)
        if key not in lib:
            unknown.append(name)
        elif default is not None and not (name == "device" and default == "auto") and default != lib[key]:
            differs.append(f"--{name.replace('_', '-')}: CLI {default!r}, library {lib[key]!r}")
    assert not differs, differs
    assert not unknown, f"CLI options the library does not declare: {unknown}"
