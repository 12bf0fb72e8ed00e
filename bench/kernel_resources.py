"""What the fused DARE-TIES kernels compile to for an H200 (sm_90), against another commit's, without a GPU.

    python bench/kernel_resources.py --against main [--triton PATH]

A GPU's time is not measured here (the device tool does that: bench/merge_host.py); this is what a CPU machine can
measure of the kernels: each compiled variant's first compile time (a fresh Triton cache), its registers per
thread (they set how many programs an SM holds at once), shared memory, stack (spills) and SASS instruction
count, for this tree and for `--against` (a commit, read with `git archive` into a temporary folder), each in its
own process. Needs Triton with its bundled ptxas and cuobjdump (`--triton`: a folder to import it from, e.g.
`pip install --no-deps --target /tmp/tri36 triton==3.6.0`, the version the H200 machines run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POINTERS = {"tensors": "*i64", "chunks": "*i32", "partials": "*fp32", "chunk_partials": "*fp32", "factors": "*fp32",
            "floats": "*fp32", "keeps": "*u8", "f_witness": "*bf16", "m_witness": "*bf16", "out_witness": "*bf16",
            "stride": "i64", "chunk_stride": "i64"}


def _variants(dt, tables, delta) -> list[tuple[str, object, dict, int]]:
    """(label, kernel, constexprs, warps) of every compiled variant a breeding launches, as the module launches them."""
    flags = tables.DareFlag
    common = dict(INT_ROW=tables.INT_ROW, SHIFT=dt.SHIFT, RESCALE=int(flags.RESCALE), KEEP_BYTES=getattr(dt, "KEEP_BYTES", 0))
    pieces = tables.MULTI_CHUNK // dt.SUMS_BLOCK
    sums = dict(common, BLOCK=dt.SUMS_BLOCK, PIECES=pieces, LEVELS=dt.SUMS_BLOCK.bit_length() - 1,
                PIECE_LEVELS=pieces.bit_length() - 1, JOINED=dt.SUMS_JOINED)
    group = getattr(dt, "FACTOR_GROUP", dt.BLOCK)
    factor = dict(common, CHUNK=tables.MULTI_CHUNK, GROUP=group, LEVELS=group.bit_length() - 1, EPS=delta.RESCALE_EPS)
    merge = dict(common, FLOAT_ROW=tables.FLOAT_ROW, BLOCK=dt.BLOCK, PIECES=dt.PIECES, DROP=int(flags.DROP),
                 NORMALIZE=int(flags.NORMALIZE), BLEND=int(flags.BLEND), TASK_VECTOR=int(flags.TASK_VECTOR),
                 SKIP=tables.SKIP_MODE)
    rows = [("sums, before and after", dt._dare_sums_kernel, dict(sums, BEFORE=True), dt.SUMS_WARPS),
            ("sums, after only (a layout)", dt._dare_sums_kernel, dict(sums, BEFORE=False), dt.SUMS_WARPS),
            ("factor", dt._dare_factor_kernel, factor, getattr(dt, "FACTOR_WARPS", 8)),
            ("merge, DARE-TIES rows", dt._dare_merge_kernel, dict(merge, TASK_VECTORS=True, KEEP_BITS=False), 8)]
    if hasattr(dt, "KEEP_BYTES"):
        rows.append(("merge, DARE-TIES rows, keep bits read", dt._dare_merge_kernel,
                     dict(merge, TASK_VECTORS=True, KEEP_BITS=True), 8))
    rows.append(("merge, copies and linear rows", dt._dare_merge_kernel, dict(merge, TASK_VECTORS=False, KEEP_BITS=False), 8))
    return rows


def _resources(cubin: bytes, tools: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        usage = subprocess.run([str(tools / "cuobjdump"), "-res-usage", file.name], capture_output=True, text=True).stdout
        sass = subprocess.run([str(tools / "cuobjdump"), "-sass", file.name], capture_output=True, text=True).stdout
    found = {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED):(\d+)", usage)}
    found["SASS"] = len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+\S", sass, re.M))
    return found


def measure(tree: Path) -> list[dict]:
    """Compile every variant of `tree`'s kernels (in this process, a fresh Triton cache) and read their resources."""
    sys.path.insert(0, str(tree))
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from darwin_core.merge.methods import _dare_triton as dt
    from darwin_core.merge.methods import delta, fused_tables

    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    rows = []
    for label, kernel, constants, warps in _variants(dt, fused_tables, delta):
        names = kernel.arg_names
        signature = {name: POINTERS.get(name, "constexpr") for name in names}
        constants = {name: value for name, value in constants.items() if name in names}
        hints = {(names.index(name),): [["tt.divisibility", 16]] for name, kind in signature.items() if kind[0] == "*"}
        started = time.perf_counter()
        compiled = triton.compile(ASTSource(kernel, signature, constants, hints), target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": warps, "enable_fp_fusion": False})
        rows.append({"kernel": label, "warps": warps, "compile_s": time.perf_counter() - started, "triton": triton.__version__,
                     **_resources(compiled.asm["cubin"], tools)})
    return rows


def _run(tree: Path, triton_path: str | None) -> list[dict]:
    env = dict(os.environ, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="triton-cache-"),
               PYTHONPATH=os.pathsep.join(filter(None, [triton_path, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__, "--measure", str(tree)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"compiling the kernels of {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def _cell(row: dict | None) -> str:
    if row is None:
        return "—"
    return f"{row['warps']} / {row['compile_s']:.1f} / {row['REG']} / {row['STACK']} / {row['SASS']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="main", help="the commit to compare with (default: main)")
    parser.add_argument("--triton", help="a folder to import Triton from")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.against, "darwin_core"], capture_output=True)
        if archive.returncode:
            raise SystemExit(f"--against {args.against}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        peer, ours = _run(Path(folder), args.triton), _run(REPO, args.triton)
    print(f"sm_90, Triton {ours[0]['triton']} and its ptxas; compile seconds cold (a fresh cache), {os.cpu_count()} cores")
    print(f"| kernel | {args.against}: warps / compile s / registers / stack / SASS | this tree: the same |")
    print("| --- | --- | --- |")
    theirs = {row["kernel"]: row for row in peer}
    for row in ours:
        other = theirs.get(row["kernel"])
        print(f"| {row['kernel']} | {_cell(other)} | {_cell(row)} |")


if __name__ == "__main__":
    main()
