"""The README documents the genome spaces with the very text the code carries."""

from pathlib import Path

from darwin_core.genome.spaces import GENOME_TABLE_MD

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_genome_table_is_the_one_in_the_code() -> None:
    body = GENOME_TABLE_MD.replace("### Genome spaces\n", "", 1).strip()
    assert body in README.read_text()


def test_readme_breeding_config_is_a_valid_config_with_the_defaults_it_claims() -> None:
    import re

    from darwin_core.evolution.pipeline import EvolutionConfig

    block = re.search(r"```yaml\n(# breed\.yaml.*?)```", README.read_text(), re.S).group(1)
    config = EvolutionConfig.from_yaml(block)
    default = EvolutionConfig(father=config.father, mother=config.mother)
    assert config.mri == "auto" and default.mri is None
    for name in ("tasks", "genome", "population", "generations", "proxy_items", "topk_full"):
        assert getattr(config, name) == getattr(default, name), name
