"""A breeding candidate's host work before its merge: the darwin-v6 genome made a recipe (with the MRI's per-tensor
ratios, as a breeding with MRI on builds it) and hashed, for a Qwen3-4B-shaped name list (36 layers, 398 tensors),
by each checkout named on the command line, one process each, alternating:

    git worktree add /tmp/old <commit>
    python bench/recipe_build.py /tmp/old . /tmp/old .

Prints one table row per process: the median over 300 fresh recipes and the recipe hash of the last one (the
same hash for both checkouts says the same recipe was built). Inside a breeding this sits in the merge step's
seconds (`problem.measure`), before `ResidentChild.load_recipe`.
"""

import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from darwin_core.genome.spaces import get_space
from darwin_core.recipe import ParentRef
roles = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn.q_norm",
         "self_attn.k_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
         "post_attention_layernorm"]
names = [f"model.layers.{l}.{r}.weight" for l in range(36) for r in roles] + ["model.embed_tokens.weight",
                                                                              "model.norm.weight"]
rng = np.random.default_rng(0)
mri = {name: float(rng.uniform(0.2, 0.8)) for name in names}
space = get_space("darwin-v6")
low, high = space.bounds
times = []
for _ in range(300):
    genome = [float(rng.uniform(a, b)) for a, b in zip(low, high)]
    started = time.perf_counter()
    recipe = space.to_recipe(genome, father=ParentRef("father"), mother=ParentRef("mother"), layer_count=36,
                             method="dare_ties", mri_ratios=mri, seed=0, dtype="bfloat16")
    digest = recipe.recipe_hash
    times.append(time.perf_counter() - started)
print(json.dumps({"median_ms": statistics.median(times) * 1e3, "tensors": len(names), "hash": digest}))
"""


def main(repos: list[str]) -> int:
    print("| checkout | tensors | recipe built and hashed, median ms | last recipe's hash |\n| --- | ---: | ---: | --- |")
    for repo in repos:
        out = subprocess.run([sys.executable, "-c", CHILD, str(Path(repo).resolve())], check=True,
                             capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {repo} | {row['tensors']} | {row['median_ms']:.2f} | {row['hash'][:16]}… |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["."]))
