"""``preempt export``: write a model as ONNX, checked against torch."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import PreemptError, UsageError
from .common import err_console, load_named, print_json


def export_cmd(
    onnx: Path = typer.Option(..., "--onnx", help="Where to write the ONNX file (a card NAME.json is written beside it)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Bundled model name or weight file."),
    json_out: bool = typer.Option(False, "--json", help="The card as JSON on stdout."),
) -> None:
    """Export a model to ONNX and check that onnxruntime gives the same logits."""
    from ..models.onnx import export_onnx

    if onnx.suffix != ".onnx":
        raise UsageError(f"--onnx {onnx}: the file name must end in .onnx")
    clf = load_named(model, "cpu")
    if not clf.differentiable:
        raise UsageError(f"{clf.name} is already an ONNX model")
    try:
        card = export_onnx(clf, onnx)
    except PreemptError as e:
        raise PreemptError(f"{onnx}: {e}") from e
    except Exception as e:  # torch.onnx's own errors: name the file and the first line
        raise PreemptError(f"{onnx}: export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    err_console.print(f"wrote {onnx} (max |logit difference| vs torch "
                      f"{card['onnx_check']['max_abs_logit_difference']:.1e} on 16 probes)", highlight=False)
    if json_out:
        print_json(card)
