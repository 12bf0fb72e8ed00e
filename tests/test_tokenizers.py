"""The tokenizer pre-flight: a broken tokenizer is one sentence before any run; differences are named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from darwin_core.errors import DarwinError
from darwin_core.parents.tokenizers import VocabularyRelation, check_tokenizer, check_tokenizers, tokenizer_report
from darwin_core.testing.fixtures import write_tiny_model
from darwin_core.testing.tokenizer_fixtures import (write_chat_mother, write_padded_mother, write_silent_model,
                                                    write_uncovering_model)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    father = write_tiny_model("llama", root / "father", seed=0)
    return {"father": father, "chat": write_chat_mother(father, root / "chat"),
            "padded": write_padded_mother(father, root / "padded"),
            "uncovering": write_uncovering_model(root / "uncovering"), "silent": write_silent_model(root / "silent")}


def scan_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "darwin_core", "scan", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_a_mother_that_added_chat_tokens_is_named_with_her_tokens_and_template(folders):
    report = check_tokenizers(folders["father"], folders["chat"])
    assert report.relation is VocabularyRelation.MOTHER_ADDS and not report.findings
    assert any("<|im_start|>" in note and "2 only the mother has" in note for note in report.differences)
    assert "The chat templates differ: only the mother has one." in report.differences


def test_a_padded_vocabulary_is_the_same_vocabulary_and_healthy(folders):
    report = check_tokenizers(folders["father"], folders["padded"])
    assert report.relation is VocabularyRelation.SAME and report.differences == [] and report.findings == []


def test_a_tokenizer_larger_than_its_vocab_size_is_one_sentence(folders):
    with pytest.raises(DarwinError) as caught:
        check_tokenizers(folders["father"], folders["uncovering"])
    assert str(caught.value).startswith("The tokenizer of the mother")
    assert "has 56 tokens but its config.json's vocab_size is 40" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_tokenizer_that_encodes_text_to_nothing_is_one_sentence(folders):
    report = tokenizer_report(folders["silent"], folders["father"])
    assert len(report.findings) == 1 and "encodes the plain text" in report.findings[0]
    with pytest.raises(DarwinError, match="^The tokenizer of the father .* to no tokens at all"):
        check_tokenizers(folders["silent"], folders["father"])
    with pytest.raises(DarwinError, match="to no tokens at all"):
        check_tokenizer(folders["silent"])


def test_a_folder_without_tokenizer_files_is_noted_not_refused(folders, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((folders["father"] / "config.json").read_bytes())
    report = check_tokenizers(folders["father"], bare)
    assert report.relation is VocabularyRelation.UNKNOWN and "mother has no tokenizer files" in report.differences[0]


@pytest.mark.parametrize("broken,args", [("silent", ()), ("uncovering", ("--mother", "father"))])
def test_scan_refuses_a_broken_tokenizer_in_one_sentence(folders, broken, args):
    extra = tuple(str(folders[a]) if a in folders else a for a in args)
    result = scan_cli(folders[broken], *extra)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: The tokenizer of the") and "Traceback" not in result.stderr
