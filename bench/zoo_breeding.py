"""The zoo's default breeding (docs/evolution.md's first row: EvolutionConfig defaults, mri auto, seed 0, CPU) by
the checkout at argv[1], one process; prints the best candidate and the wall seconds of `jobs.execute`.

Two checkouts alternated, to see whether a change slows the CPU path (docs/benchmarks.md, "The CPU path"):

    git worktree add /tmp/old <commit>
    for round in 1 2; do for repo in /tmp/old .; do python bench/zoo_breeding.py $repo | grep RESULT; done; done
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(repo))
spec = importlib.util.spec_from_file_location("evolution_table", repo / "scripts" / "evolution_table.py")
table = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = table  # dataclasses look their module up there
spec.loader.exec_module(table)
zoo = next(f for f in table.FAMILIES if f.name == "zoo")
config = table.family_config(zoo, seed=0)
with tempfile.TemporaryDirectory() as runs:
    report, _, seconds = table.run_once(config, Path(runs))
print(f"RESULT {repo} {report['best']['name']} {seconds:.1f}", flush=True)
