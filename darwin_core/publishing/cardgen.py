"""The card's inputs, gathered from a run folder: what the run measured and nothing typed by hand.

`card_inputs(run_dir)` reads the run's config (parents), best recipe (method, hash, genome), report
(held-out table with intervals and p-values, search fitness), health check (verdict, findings) and the parents'
own metadata (license from their README front matter or the Hub, genealogy when a parent is itself a Darwin
child) into a `darwin_core.publishing.card.CardInputs`; `card.build_card` turns that into the card.

Anyone may view a card and the card is published, so two rules hold:
- Viewing writes nothing. Pictures (fitness curve, MRI map) are drawn in memory (`render_pictures`); a page
  shows them inline (`inline_pictures`). Only `write_card` — the owner pushing, zipping or saving the child —
  draws them into the child folder as PNGs, beside the README that names them by file name.
- No path of this machine appears (runs folder, Hub cache, home, temp). Parents are named by Hub id (pinned
  `id@commit` where it must be reproducible), `demo:<member>`, `run:<id>` or a folder's name; the recipe shown
  is `Recipe.public()` reduced to what decides the child's bytes (`recipe_view`); the reproduce command carries
  the run's settings with task files by file name.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from darwin_core.io.atomic import atomic_write_bytes
from darwin_core.publishing.card import CardInputs, HeldoutRow, build_card, evidence_inputs
from darwin_core.errors import DarwinError
from darwin_core.health.run import HEALTH
from darwin_core.parents.names import DEMO_PREFIX, RUN_PREFIX, cached_repo, parent_label
from darwin_core.io.runfolder import BEST_RECIPE, CHILD, MRI_SCAN, REPORT, RunFolder, atomic_write_text

CARD_FILE = "README.md"
CURVE_PICTURE = "darwin-fitness.png"
CURVE_CAPTION = "Fitness on the search split per generation"
MRI_PICTURE = "darwin-mri-advantage.png"
MRI_CAPTION = "MRI layer advantage: mother − father probe importance per layer (red: the mother relies on it more)"
CHILD_RECIPE = "darwin-recipe.yaml"
EVOLVE_FILE = "darwin-evolve.yaml"
BASELINE_COLORS = {"father": "#1f77b4", "mother": "#d62728", "uniform-50": "#7f7f7f", "mri": "#9467bd"}
BEST_COLOR = "#2ca02c"

if TYPE_CHECKING:  # darwin_core.recipe imports torch: loaded only where a recipe is read
    from darwin_core.recipe import ParentRef

_FRONT_MATTER = re.compile(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", re.S)


# --------------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise DarwinError(f"{path.name} in the run folder is not valid JSON.") from None


def public_parent(ref: ParentRef, zoo_dir: str | Path | None = None, *, pinned: bool = False) -> str:
    """A recipe parent's public name; `pinned` gives a Hub parent as `id@commit`, the form that reproduces.

    A Hub parent has a revision (its path is only where the cache keeps it); a local one has a path only.
    """
    if ref.path and not ref.revision:
        cached = cached_repo(Path(ref.path))
        if cached and pinned:
            return f"{cached[0]}@{cached[1]}"
        return parent_label(ref.path, zoo_dir)
    return parent_label(ref.label() if pinned else ref.id, zoo_dir)


def _parent_name(typed: Any, ref: ParentRef, zoo_dir: str | Path | None, *, pinned: bool) -> str:
    """The run's config name when it is already public (`demo:`, `run:`), else the recipe parent's public name."""
    text = str(typed or "").strip()
    return text if text.startswith((DEMO_PREFIX, RUN_PREFIX)) else public_parent(ref, zoo_dir, pinned=pinned)


def folder_license(folder: str | Path) -> str | None:
    """The `license:` of a model folder's README front matter (what the Hub shows), if it declares one."""
    try:
        text = (Path(folder) / CARD_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    match = _FRONT_MATTER.match(text)
    if not match:
        return None
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return str(value) if value else None


def parent_license(ref: str | ParentRef) -> str | None:
    """A parent's license: its folder's README, else what the Hub (or the offline cache) says; None if unknown."""
    if not isinstance(ref, str):  # a recipe's ParentRef: a local folder's README, else the (pinned) Hub repo
        found = folder_license(ref.path) if ref.path else None
        local = ref.path is not None and not ref.revision
        return found if found or local else parent_license(ref.label())
    path = Path(ref).expanduser()
    if path.is_dir():
        return folder_license(path)
    try:
        from darwin_core.parents.hub import resolve_model

        return resolve_model(ref, local_mode=False).license
    except Exception:  # noqa: BLE001 — unknown stays unknown; the card then asks the user to check
        return None


def genealogy(ref: ParentRef, zoo_dir: str | Path | None = None) -> list[str]:
    """Ancestors of one parent, oldest first, when that parent is itself a Darwin child (its folder has a recipe)."""
    from darwin_core.recipe import ParentRef

    recipe_file = Path(ref.path) / CHILD_RECIPE if ref.path else None
    if recipe_file is None or not recipe_file.is_file():
        return []
    try:
        doc = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return []
    names = []
    for role in ("father", "mother"):
        entry = doc.get(role) if isinstance(doc, Mapping) else None
        if isinstance(entry, Mapping) and entry.get("id"):
            names.append(public_parent(ParentRef.of(entry), zoo_dir))
    if not names:
        return []
    return [f"({' × '.join(names)})", public_parent(ref, zoo_dir)]


def _row(task: str, n_items: int, models: Mapping, comparisons: Mapping) -> HeldoutRow:
    def score(model: str) -> float:
        entry = models[model]
        return float(entry["composite"] if task == "composite" else entry["scores"][task])

    f, m = comparisons["father"][task], comparisons["mother"][task]
    return HeldoutRow(
        task=task, n_items=int(n_items), child=score("child"), father=score("father"), mother=score("mother"),
        ci_vs_father=(float(f["ci_low"]), float(f["ci_high"])), ci_vs_mother=(float(m["ci_low"]), float(m["ci_high"])),
        p_vs_father=float(f["p_value"]), p_vs_mother=float(m["p_value"]),
    )


def heldout_rows(heldout: Mapping | None) -> list[HeldoutRow]:
    """One row per task, then the weighted composite, from report.json's `heldout` section."""
    if not heldout:
        return []
    models, comparisons, items = heldout["models"], heldout["comparisons"], heldout.get("items", {})
    rows = [_row(task, items.get(task, comparisons["father"][task]["n"]), models, comparisons) for task in items]
    if "composite" in comparisons["father"]:
        rows.append(_row("composite", sum(items.values()) or comparisons["father"]["composite"]["n"], models, comparisons))
    return rows


# --------------------------------------------------------------------------------------------- pictures


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def curve_png(curves: Mapping, path: str | Path, *, width: int = 900, height: int = 500) -> Path:
    """The fitness curve written as a PNG file (see `curve_image`)."""
    return _save_png(curve_image(curves, width=width, height=height), path)


def curve_image(curves: Mapping, *, width: int = 900, height: int = 500) -> Any:
    """The fitness curve as a Pillow image: every candidate, the best so far per generation, baselines dashed.

    Drawn with Pillow: plotly's image export needs kaleido, which neither the Space nor the CLI installs.
    """
    from PIL import Image, ImageDraw

    points = [p for p in curves.get("points") or [] if p.get("fitness") is not None]
    baselines = {k: v for k, v in (curves.get("baselines") or {}).items() if v is not None}
    best = [(g, b) for g, b in zip(curves.get("generations") or [], curves.get("best_so_far") or []) if b is not None]
    values = [p["fitness"] for p in points] + list(baselines.values()) + [b for _, b in best]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    last = max([p["generation"] for p in points] + [g for g, _ in best] + [1])

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(13)
    left, right, top, bottom = 80, width - 170, 40, height - 60

    def x_of(g: float) -> float:
        return left + (right - left) * g / last

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    draw.text((left, 10), "Fitness on the search split per generation", fill="black", font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black", width=1)
    for k in range(5):
        v = low + (high - low) * k / 4
        draw.line([(left - 5, y_of(v)), (left, y_of(v))], fill="black")
        draw.text((8, y_of(v) - 8), f"{v:.3f}", fill="black", font=small)
    step = max(1, -(-last // 10))  # at most about ten labelled generations, however long the run
    for g in range(0, last + 1, step):
        draw.line([(x_of(g), bottom), (x_of(g), bottom + 5)], fill="black")
        draw.text((x_of(g) - 4, bottom + 8), str(g), fill="black", font=small)
    draw.text(((left + right) // 2 - 35, bottom + 30), "generation", fill="black", font=small)

    legend_y = top
    for name, value in baselines.items():
        color = BASELINE_COLORS.get(name, "#bcbd22")
        for x0 in range(left, right, 14):
            draw.line([(x0, y_of(value)), (min(x0 + 7, right), y_of(value))], fill=color, width=2)
        draw.line([(right + 12, legend_y + 8), (right + 32, legend_y + 8)], fill=color, width=2)
        draw.text((right + 38, legend_y), f"{name} {value:.3f}", fill="black", font=small)
        legend_y += 20
    for p in points:
        x, y = x_of(p["generation"]), y_of(p["fitness"])
        full = p.get("phase") == "full"
        draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], outline="#1a9850" if full else "#17becf", fill="#1a9850" if full else None)
    if best:
        if len(best) > 1:
            draw.line([(x_of(g), y_of(b)) for g, b in best], fill=BEST_COLOR, width=3)
        for g, b in best:
            draw.ellipse([(x_of(g) - 5, y_of(b) - 5), (x_of(g) + 5, y_of(b) + 5)], fill=BEST_COLOR)
        draw.line([(right + 12, legend_y + 8), (right + 32, legend_y + 8)], fill=BEST_COLOR, width=3)
        draw.text((right + 38, legend_y), "best so far", fill="black", font=small)
        legend_y += 20
    draw.ellipse([(right + 18, legend_y + 4), (right + 26, legend_y + 12)], outline="#17becf")
    draw.text((right + 38, legend_y), "candidate", fill="black", font=small)
    return image


def _diverging(value: float, bound: float) -> tuple[int, int, int]:
    """Blue (negative) → white → red (positive), like plotly's reversed RdBu."""
    t = max(-1.0, min(1.0, value / bound)) if bound > 0 else 0.0
    far = (178, 24, 43) if t > 0 else (33, 102, 172)
    return tuple(round(255 + (c - 255) * abs(t)) for c in far)  # type: ignore[return-value]


def advantage_png(pair: Mapping, path: str | Path, *, cell: tuple[int, int] = (90, 22)) -> Path:
    """The MRI layer advantage map written as a PNG file (see `advantage_image`)."""
    return _save_png(advantage_image(pair, cell=cell), path)


def advantage_image(pair: Mapping, *, cell: tuple[int, int] = (90, 22)) -> Any:
    """The MRI layer advantage map (`ui/plots.advantage_heatmap`'s data) as a Pillow image."""
    from PIL import Image, ImageDraw

    advantage = pair["advantage"]
    categories = list(advantage)
    layers = len(advantage[categories[0]]) if categories else 0
    bound = max((abs(v) for c in categories for v in advantage[c]), default=0.0)
    left, top = 70, 60
    width, height = left + cell[0] * len(categories) + 150, top + cell[1] * layers + 30
    image = Image.new("RGB", (width, max(height, 200)), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(13)
    draw.text((10, 10), "MRI layer advantage (mother − father)", fill="black", font=font)
    for j, category in enumerate(categories):
        draw.text((left + j * cell[0] + 4, top - 20), category[:11], fill="black", font=small)
        for i in range(layers):
            x, y = left + j * cell[0], top + i * cell[1]
            draw.rectangle([(x, y), (x + cell[0] - 2, y + cell[1] - 2)], fill=_diverging(advantage[category][i], bound))
    for i in range(layers):
        draw.text((10, top + i * cell[1] + 3), f"layer {i}", fill="black", font=small)
    scale_x = left + cell[0] * len(categories) + 20
    for k, (label, value) in enumerate((("mother", bound), ("even", 0.0), ("father", -bound))):
        y = top + k * 30
        draw.rectangle([(scale_x, y), (scale_x + 20, y + 20)], fill=_diverging(value, bound), outline="black")
        draw.text((scale_x + 28, y + 3), f"{value:+.3g} {label}", fill="black", font=small)
    return image


def _png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _save_png(image: Any, path: str | Path) -> Path:
    return _write_bytes(_png_bytes(image), path)


def _write_bytes(data: bytes, path: str | Path) -> Path:
    """Write a file whole or not at all (a reader never sees half a PNG)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return target


# --------------------------------------------------------------------------------------------- the inputs


def card_pictures(folder: RunFolder) -> list[tuple[str, str]]:
    """(caption, file name) of the pictures the card shows: the ones this run has the data for."""
    pictures = []
    if folder.evaluations_size():
        pictures.append((CURVE_CAPTION, CURVE_PICTURE))
    if folder.file(MRI_SCAN).is_file():
        pictures.append((MRI_CAPTION, MRI_PICTURE))
    return pictures


def render_pictures(run_dir: str | Path, names: Collection[str] | None = None) -> list[tuple[str, str, bytes]]:
    """(caption, file name, PNG bytes) of the card's pictures (only `names`, when given), drawn in memory.

    In memory because anyone may view any run's card: viewing must not write into someone else's run folder.
    """
    from darwin_core.evolution.curves import curves
    from darwin_core.mri.scan import load_scan

    folder = RunFolder(run_dir)
    out = []
    for caption, name in card_pictures(folder):
        if names is not None and name not in names:
            continue
        if name == CURVE_PICTURE:
            out.append((caption, name, _png_bytes(curve_image(curves(folder.evaluations())))))
        elif name == MRI_PICTURE:
            out.append((caption, name, _png_bytes(advantage_image(load_scan(folder.file(MRI_SCAN))))))
    return out


def inline_pictures(markdown: str, run_dir: str | Path) -> str:
    """The card's markdown with the pictures it names (`](darwin-fitness.png)`) as data URIs, for a page.

    In the repo the PNGs sit beside the README; a page has no URL for them, and drawing them into the child
    folder to serve them would write into a run the viewer may not own.
    """
    wanted = [name for _, name in card_pictures(RunFolder(run_dir)) if f"]({name})" in markdown]
    for _, name, data in render_pictures(run_dir, wanted) if wanted else []:
        markdown = markdown.replace(f"]({name})", f"](data:image/png;base64,{base64.b64encode(data).decode('ascii')})")
    return markdown


def draw_pictures(run_dir: str | Path) -> list[tuple[str, str]]:
    """Draw the card's pictures into the child folder, beside the README that names them (uploaded with it).

    Only `write_card` calls this — the owner pushing, zipping or saving the child; a preview uses `inline_pictures`.
    """
    child = RunFolder(run_dir).file(CHILD)
    return [(caption, _write_bytes(data, child / name).name) for caption, name, data in render_pictures(run_dir)]


def _public_task(task: Any) -> Any:
    """A config task as a reader can use it: a file by its file name (they put their copy beside the config)."""
    if isinstance(task, Mapping):
        return {k: Path(str(v)).name if k == "file" else v for k, v in task.items()}
    if isinstance(task, str) and Path(task).suffix.lower() in (".jsonl", ".json", ".csv"):
        return Path(task.removeprefix("file:")).name
    return task


def public_config(config: Mapping[str, Any], recipe: Any, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """The run's settings with nothing of this machine in them: parents by public name (Hub ones pinned to the
    commit the run bred), task files and any other path-valued setting (a saved MRI scan) by file name."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("father", "mother"):
            out[key] = _parent_name(value, getattr(recipe, key), zoo_dir, pinned=True)
        elif key == "base" and value:
            base = recipe.base
            out[key] = _parent_name(value, base, zoo_dir, pinned=True) if base != "father" else parent_label(str(value), zoo_dir)
        elif key == "tasks" and isinstance(value, (list, tuple)):
            out[key] = [_public_task(t) for t in value]
        elif isinstance(value, str) and (value.startswith(("/", "~", "./", "../")) or "\\" in value):
            out[key] = Path(value).name
        else:
            out[key] = value
    return out


def reproduce_command(config: Mapping[str, Any]) -> str:
    """Shell lines that breed the same child elsewhere: the public settings as a file, then evolve; or merge."""
    settings = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True).rstrip()
    return (
        "# the search, with this run's settings (parents pinned; put the task files named here beside it)\n"
        f"cat > {EVOLVE_FILE} <<'EOF'\n{settings}\nEOF\n"
        f"python -m darwin_core evolve {EVOLVE_FILE}\n"
        f"# or the child alone, from its recipe\npython -m darwin_core merge {CHILD_RECIPE} --out child"
    )


def card_inputs(run_dir: str | Path, *, repo_id: str | None = None, zoo_dir: str | Path | None = None) -> CardInputs:
    """Everything the card says about this run's child, read from the run folder (and the parents' metadata).

    Pure reading: the pictures it lists are the ones `render_pictures` draws (into the child only by `write_card`).
    Parents, recipe and reproduce command are their public forms: the card is read by anyone. The recipe and
    genome shown are what decides this child's bytes (`recipe_view`); the hash is the whole recipe's.
    """
    from darwin_core.publishing import recipe_view
    from darwin_core.recipe import Recipe

    folder = RunFolder(run_dir)
    if not folder.exists():
        raise DarwinError(f"{run_dir} is not a run folder.")
    config = yaml.safe_load(folder.config_text()) or {}
    recipe_path, child = folder.file(BEST_RECIPE), folder.file(CHILD)
    if not recipe_path.is_file() or not (child / "config.json").is_file():
        raise DarwinError(f"Run {folder.run_id} has no child yet; a card is made once the run has finished.")
    recipe = Recipe.from_yaml(recipe_path.read_text(encoding="utf-8"))
    report = _read_json(folder.file(REPORT)) or {}
    health = _read_json(folder.file(HEALTH))
    evaluations = folder.evaluations()

    best = report.get("best") or {}
    candidates = len({e["name"] for e in evaluations if e.get("kind") == "candidate"})
    use = recipe_view.recipe_use(recipe, recipe_view.child_tensor_names(child))
    genome, genome_hidden = recipe_view.effective_genome(recipe, use)
    return CardInputs(
        father=_parent_name(config.get("father"), recipe.father, zoo_dir, pinned=False),
        mother=_parent_name(config.get("mother"), recipe.mother, zoo_dir, pinned=False),
        recipe_yaml=recipe_view.view_yaml(recipe_view.recipe_view(recipe, use)),
        recipe_hash=recipe.recipe_hash,
        method=recipe.method,
        father_license=parent_license(recipe.father),
        mother_license=parent_license(recipe.mother),
        repo_id=repo_id,
        genome=genome,
        genome_hidden=genome_hidden,
        genome_space=recipe.genome.space if recipe.genome is not None else config.get("genome"),
        heldout=heldout_rows(report.get("heldout")),
        search_best=best.get("fitness"),
        reference_child=best.get("name") if best.get("kind") == "baseline" else None,
        generations=report.get("generations_run"),
        candidates=candidates or None,
        health_verdict=health.get("verdict") if health else None,
        health_findings=[f"[{f['severity']}] {f['message']}" for f in health.get("findings", [])] if health else [],
        pictures=card_pictures(folder),
        genealogy=genealogy(recipe.father, zoo_dir) + genealogy(recipe.mother, zoo_dir),
        reproduce_command=reproduce_command(public_config(config, recipe, zoo_dir)),
        layer_map=recipe_view.layer_map_of(recipe),
        **evidence_inputs(report),
    )


def card_text(run_dir: str | Path, *, repo_id: str | None = None, zoo_dir: str | Path | None = None) -> tuple[str, list[str]]:
    """(card markdown with its metadata header, license warnings) for a finished run."""
    card, warnings = build_card(card_inputs(run_dir, repo_id=repo_id, zoo_dir=zoo_dir))
    return str(card), warnings


def _public_child_recipe(child: Path) -> None:
    """A child merged before published recipes dropped their paths still names its parents by server paths:
    rewrite its recipe in the public form (same recipe, same hash) before it leaves the machine."""
    from darwin_core.recipe import Recipe

    path = child / CHILD_RECIPE
    if not path.is_file():
        return
    text = Recipe.load(path).public().to_yaml()
    if path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def write_card(run_dir: str | Path, text: str) -> Path:
    """Save the (possibly edited) card as the child's README.md, the file the Hub shows, with its pictures.

    The owner's step before the child leaves (push, zip, save): it alone writes into the child folder.
    """
    child = RunFolder(run_dir).file(CHILD)
    if not (child / "config.json").is_file():
        raise DarwinError("This run has no child to write a card for.")
    _public_child_recipe(child)
    draw_pictures(run_dir)
    target = child / CARD_FILE
    atomic_write_text(target, text if text.endswith("\n") else text + "\n")
    return target
