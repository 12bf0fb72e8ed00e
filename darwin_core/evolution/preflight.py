"""What a run needs from this machine, checked before its run folder is created.

`EvolutionConfig` checks what the YAML alone decides (types, ranges, names). A run also needs its parents'
folders, its task files, its scan file and its device; when one of them is missing the run would fail seconds
after it started and leave a failed run in `runs list`. Here each is checked first, and the first problem is
one sentence (`DarwinError`): the CLI prints it and exits 2, the page shows it, and no folder is left behind.

Hub parents and Hub or lm-eval tasks are only checked this far when `strict_hub` is set (the foreground CLI,
which would fail right away): a queued run may be waiting for the network, and its worker says what it found.

`preflight_report` is what the `evolve` command and the Evolve tab show before a launch: the checks, then the
run's cost estimate (candidates, items, minutes from measured speed; darwin_core.evolution.cost).
"""

from __future__ import annotations

from pathlib import Path

from darwin_core.errors import DarwinError
from darwin_core.evolution.config import EvolutionConfig


def check_before_run(config: EvolutionConfig, runs_dir: Path | None, *, strict_hub: bool = False,
                     token: str | None = None) -> None:
    """Device, MRI scan file, task files and parents, in that order (cheapest first); one sentence if not."""
    from darwin_core.merge.disk import check_device

    check_device(config.device, allow_auto=True)
    if config.mri not in (None, "auto") and config.local_mode:
        _check_file(config.mri, "MRI scan file")
    if config.probes and config.local_mode:
        _check_file(config.probes, "probes file")
    check_task_files(config)
    check_parents(config, runs_dir, strict_hub=strict_hub, token=token)


def _check_file(path: str, what: str) -> Path:
    """A file the run reads: it exists and is a file (a folder where a file goes says so)."""
    file = Path(path).expanduser()
    try:
        if file.is_dir():
            raise DarwinError(f"The {what} {path} is a folder, not a file.")
        if not file.is_file():
            raise DarwinError(f"The {what} {path} does not exist.")
    except OSError as error:
        raise DarwinError(f"The {what} {path[:80]} cannot be read ({error.strerror or type(error).__name__}).") from None
    return file


def check_task_files(config: EvolutionConfig) -> None:
    """Every `file:` task exists, is a file, and reads as its format (the loader's sentence names file and line);
    demo tasks are built too (cheap). Hub and lm-eval tasks are left to the run (network, seconds of indexing)."""
    from darwin_core.evolution.tasks import load_spec

    for spec in config.tasks:
        if spec.source == "file":
            if config.local_mode:
                from darwin_core.fitness.sources import expand_task_paths

                for path in expand_task_paths(spec.ref):  # a pattern matching nothing: one sentence
                    _check_file(str(path), "task file")
            load_spec(spec, split_seed=config.split_seed)
        elif spec.source == "demo":
            load_spec(spec, split_seed=config.split_seed)


def check_parents(config: EvolutionConfig, runs_dir: Path | None, *, strict_hub: bool = False,
                  token: str | None = None) -> None:
    """Each parent (and the base) named validly, local folders present and holding a model, and the pair
    breedable (`darwin_core.parents.compatibility`), from configs and headers only, before any weight is fetched.

    A Hub parent that does not resolve (not found, offline) is left to the run unless `strict_hub`; `token` is the
    Hub token of the user who will execute the run themself (the CLI's HF_TOKEN), for a gated parent."""
    from darwin_core.parents.compatibility import check_breedable
    from darwin_core.parents.names import Scheme, parse_parent, resolve_parent_name

    named = {"father": config.father, "mother": config.mother}
    if config.base and config.base != "father":
        named["base"] = config.base
    schemes = {who: parse_parent(ref, local_mode=config.local_mode).scheme for who, ref in named.items()}
    resolved = {}
    for who, ref in named.items():
        try:
            resolved[who] = resolve_parent_name(ref, local_mode=config.local_mode, runs_dir=runs_dir, token=token,
                                                check_access=False)
        except DarwinError:
            if schemes[who] is not Scheme.HUB or strict_hub:
                raise
    if "father" in resolved and "mother" in resolved:
        check_breedable(resolved["father"], resolved["mother"])
    check_parent_tokenizers(resolved)
    if all(getattr(resolved.get(who), "folder", None) is not None for who in ("father", "mother")):
        from darwin_core.evolution.pipeline import fit_to_pairing

        fit_to_pairing(config, runs_dir=runs_dir)  # genome and MRI settings this pair cannot use, before a folder


def check_parent_tokenizers(resolved: dict) -> None:
    """A parent's tokenizer that does not cover its config's vocab_size, or encodes text to nothing, is one
    sentence here (`darwin_core.parents.tokenizers`), not an index error or a reshape traceback mid-run. Only
    parents whose folder is on this machine are read; a Hub parent not downloaded yet is checked by its run."""
    from darwin_core.parents.tokenizers import tokenizer_findings

    for who in ("father", "mother"):
        folder = getattr(resolved.get(who), "folder", None)
        if folder is not None:
            findings = tokenizer_findings(folder, who)
            if findings:
                raise DarwinError(findings[0])


def preflight_report(config: EvolutionConfig, runs_dir: Path | None, *, strict_hub: bool = False) -> str:
    """Every check of `check_before_run` (one sentence if one fails), then the cost estimate line and, where the
    parents are on this machine, the placement line."""
    from darwin_core.evolution.cost import estimate_cost

    check_before_run(config, runs_dir, strict_hub=strict_hub)
    placement = placement_sentence(config, runs_dir)
    return "\n".join([estimate_cost(config, runs_dir).sentence(), *([placement] if placement else [])])


def placement_sentence(config: EvolutionConfig, runs_dir: Path | None) -> str | None:
    """Where the run will keep the parents (resident on the GPU, streamed from pinned host memory, or merged on
    the CPU) and what a candidate's merge will cost, from the headers and the free memory measured now; None
    when a parent is not on this machine yet (a Hub parent before its download)."""
    from darwin_core.evolution.placement import plan_for_pair
    from darwin_core.parents.names import resolve_parent_name

    named = [config.father, config.mother]
    if config.base and config.base != "father":
        named.append(config.base)
    folders = []
    for ref in named:
        try:
            folder = getattr(resolve_parent_name(ref, local_mode=config.local_mode, runs_dir=runs_dir,
                                                 check_access=False), "folder", None)
        except DarwinError:
            return None
        if folder is None:
            return None
        folders.append(folder)
    return plan_for_pair(folders, config.device).sentence()
