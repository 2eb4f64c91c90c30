"""The restructure proof as a slow test (``pytest --slow``): robustify under every check preset, robustify's
``judge`` with and without a service transform, every verify suite without a surrogate and ``verify_files`` on
written PNGs give the very pixels, passes and verdicts recorded in ``tests/golden/identical.json``
(``python tests/identical.py --digest tests/golden/identical.json``; a deliberate change rewrites it and says so
in the commit).  Bit-identical float results depend on the CPU's vector extensions, torch and the thread count
too, so elsewhere it skips and says why."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "identical.json"


@pytest.mark.slow
def test_same_pixels_passes_and_verdicts_as_recorded():
    pytest.importorskip("preempt.data")
    from preempt.data import DataError, fashion_mnist

    try:
        fashion_mnist("test")
    except DataError as e:
        pytest.skip(f"needs Debian's dataset-fashion-mnist: {e}")
    sys.path.insert(0, str(HERE))
    import identical

    golden = json.loads(GOLDEN.read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(golden["environment"]["threads"])
    try:
        env = identical.environment()
        if env != golden["environment"]:
            pytest.skip(f"recorded on {golden['environment']}, this is {env}: float rounding may differ")
        now = identical.digests(identical.run())
    finally:
        torch.set_num_threads(threads)
    diffs = [k for k in golden["results"] if golden["results"][k] != now.get(k)] + sorted(set(now) - set(golden["results"]))
    assert not diffs, f"{len(diffs)} results differ from tests/golden/identical.json: {diffs[:10]}"
