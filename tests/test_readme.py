"""The README documents the genome spaces with the very text the code carries."""

from pathlib import Path

from darwin_core.genome import GENOME_TABLE_MD

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_genome_table_is_the_one_in_the_code() -> None:
    body = GENOME_TABLE_MD.replace("### Genome spaces\n", "", 1).strip()
    assert body in README.read_text()
