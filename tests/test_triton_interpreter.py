"""The fused GPU kernels themselves, bit for bit, on a CPU: Triton's interpreter runs `_dare_triton`'s kernels
(tests/interpreted_kernels.py, a process of its own: the interpreter is chosen when Triton is imported) and their
children are compared with the CPU reference merge's. DARE-TIES without a method-weight blend (whose lerp a CPU
rounds otherwise, as a GPU does), rescaled and not, through the batches and through a resident layout; the
factor kernel over more chunk sums than one of its groups holds. tests/test_gpu.py checks the same kernels on a
GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")  # a test extra (requirements-test.txt)


@pytest.fixture(scope="module")
def interpreted() -> dict:
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("interpreted_kernels.py"))],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_the_dare_ties_kernels_write_the_reference_bytes_in_batches(interpreted):
    assert len(interpreted["batches"]) == 6
    assert interpreted["batches"] == {label: [] for label in interpreted["batches"]}


def test_the_dare_ties_kernels_write_the_reference_bytes_through_a_resident_layout(interpreted):
    assert len(interpreted["layout"]) == 6
    assert interpreted["layout"] == {label: [] for label in interpreted["layout"]}


def test_the_factor_kernel_adds_a_tensors_chunk_sums_in_the_reference_order_over_several_groups(interpreted):
    assert interpreted["factors"] == {count: True for count in ("1", "2", "1023", "1025", "2049", "11873")}
