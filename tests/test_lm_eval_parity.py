"""Our acc / acc_norm are lm-evaluation-harness's: same per-choice log-likelihoods, same picks, same scores.

lm-eval itself (`simple_evaluate`, model="hf", device="cpu", `log_samples=True`) runs on a
local multiple-choice task whose data is a small jsonl, against a tiny model saved in
the Hub layout; Darwin scores the same items (read through the lm-eval bridge, and
through its own user-file loader) on the same model. Both load the weights in float64,
so the comparison tests the definitions (tokenisation at the context/continuation
boundary, trailing whitespace, left truncation, summing, length normalisation) rather
than float32 rounding, which differs between any two batchings (~1e-6).
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
import torch

from darwin_core.fitness.scoring import score_choices
from darwin_core.fitness.sources import read_items, tasks_from_lm_eval

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a test extra (requirements-test.txt)")
pytest.importorskip("datasets", reason="lm-eval's local json tasks need `datasets`")

TOLERANCE = 1e-6


def parity_rows() -> list[dict]:
    rng = random.Random(0)
    long_question = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 7))) for _ in range(150))
    return [
        {"question": "what is the capital of france?", "choices": ["paris", "london", "berlin", "madrid"], "answer": 0},
        {"question": "which one is a fruit?", "choices": ["carrot", "apple pie filling", "banana", "potato"], "answer": 2},
        {"question": "2 + 2 = ?", "choices": ["4", "22", "five", "3.9999"], "answer": 0},
        {"question": "한국의 수도는?", "choices": ["서울", "부산광역시", "tokyo"], "answer": 0},  # acc_norm counts characters
        {"question": "pick the longest word.", "choices": ["a", "internationalization", "cat"], "answer": 1},
        {"question": "pick a letter.", "choices": ["a", "b", "c", "d"], "answer": 3},  # one-token choices share a row
        {"question": long_question + "?", "choices": ["first", "second option", "third"], "answer": 1},  # long shared context
        {"question": "is the sky blue?", "choices": ["yes", "no"], "answer": 0},
    ]


def bpe_model(folder: Path, texts: list[str]) -> Path:
    """A tiny Llama with a byte-level BPE trained on the items (GPT-2 / Llama 3 style: " paris" is one token),
    adding BOS like Llama tokenizers do, saved in the Hub layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<bos>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts * 3, trainer)
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", core.token_to_id("<bos>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TASKS = {
    # name: doc_to_text (the second ends in a space, which lm-eval moves into the continuation)
    "darwin_parity": "Question: {{question}}\\nAnswer:",
    "darwin_parity_ws": "{{question}}\\nAnswer: ",
}


def write_tasks(folder: Path, data: Path) -> None:
    for name, template in TASKS.items():
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\n"
            "dataset_path: json\n"
            "dataset_kwargs:\n"
            f"  data_files:\n    test: {data}\n"
            f"  cache_dir: {folder / 'cache'}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            f'doc_to_text: "{template}"\n'
            'doc_to_choice: "{{choices}}"\n'
            "doc_to_target: answer\n"
            "metric_list:\n"
            "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n",
            encoding="utf-8",
        )


def run_parity(model_dir: Path, tmp_path: Path, monkeypatch) -> dict:
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = parity_rows()
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    write_tasks(tasks_dir, data)

    theirs = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float64",
        tasks=list(TASKS),
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        device="cpu",
        batch_size=3,
        num_fewshot=0,
        log_samples=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bridged = {t.name: t for t in tasks_from_lm_eval(list(TASKS), include_path=tasks_dir, include_defaults=False)}

    report = {}
    for name in TASKS:
        items = sorted(bridged[name].search + bridged[name].heldout, key=lambda i: int(i.id.rsplit("-", 1)[1]))
        samples = sorted(theirs["samples"][name], key=lambda s: s["doc_id"])
        assert len(items) == len(samples) == len(rows)
        for share in (None, 0):  # flat rows, and one cached context per item
            ours = score_choices(model, tokenizer, items, batch_size=4, share_context_from=share)
            worst = 0.0
            for item, result, sample in zip(items, ours, samples):
                lm_lls = [float(r[0]) for r in sample["filtered_resps"]]
                worst = max(worst, max(abs(a - b) for a, b in zip(result.logliks, lm_lls, strict=True)))
                assert result.correct == bool(sample["acc"]), (name, item.id)
                assert result.correct_norm == bool(sample["acc_norm"]), (name, item.id)
            assert worst <= TOLERANCE, f"{name}: largest loglik difference {worst:.2e}"
            acc = sum(r.correct for r in ours) / len(ours)
            acc_norm = sum(r.correct_norm for r in ours) / len(ours)
            assert acc == pytest.approx(theirs["results"][name]["acc,none"], abs=1e-12)
            assert acc_norm == pytest.approx(theirs["results"][name]["acc_norm,none"], abs=1e-12)
            report[(name, share)] = (worst, acc, acc_norm)
    # Darwin's own user-file loader gives the bridge's items for the plain "Question: ...\nAnswer:" task.
    own = read_items(data)
    assert [f"Question: {i.prompt}\nAnswer:" for i in own] == [
        i.prompt for i in sorted(bridged["darwin_parity"].search + bridged["darwin_parity"].heldout, key=lambda i: int(i.id.rsplit("-", 1)[1]))
    ]
    return report


def test_acc_and_acc_norm_equal_lm_eval_per_item_on_a_byte_level_bpe_model(tmp_path, monkeypatch):
    rows = parity_rows()
    texts = [f"Question: {r['question']}\nAnswer: " + " ".join(r["choices"]) for r in rows]
    model_dir = bpe_model(tmp_path / "model", texts)
    report = run_parity(model_dir, tmp_path, monkeypatch)
    print({f"{k[0]}/{'shared' if k[1] == 0 else 'flat'}": f"maxdiff={v[0]:.1e} acc={v[1]:.3f} acc_norm={v[2]:.3f}" for k, v in report.items()})
    # The task is not trivial for the comparison: the picks differ between acc and acc_norm somewhere.
    assert any(v[1] != v[2] for v in report.values())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3", "gemma3_text", "phi3", "qwen3_5_text"])
def test_parity_on_fixture_architectures(arch, tmp_path, monkeypatch):
    fixtures = pytest.importorskip("darwin_core.testing.fixtures", reason="the fixtures module is not in this checkout")
    model_dir = fixtures.write_tiny_model(arch, tmp_path / arch, seed=0)
    report = run_parity(model_dir, tmp_path, monkeypatch)
    print(arch, report)
