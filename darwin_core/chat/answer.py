"""One prompt, each chosen model's answer: greedy or sampled, with the father's chat template.

Every model is given the same text: the prompt wrapped in the father's chat template when his tokenizer has one
(the child inherits the father's tokenizer, and breedable parents share a vocabulary), the raw prompt when it
has none (the demo zoo's character tokenizer). Sampling is seeded per model, so a sampled answer is
reproducible and can be served again from the stored result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from darwin_core.errors import DarwinError

MAX_NEW_TOKENS_LIMIT = 1024


@dataclass(frozen=True)
class Sampling:
    """How the answers are decoded: greedy (the default, deterministic) or sampled with a temperature."""

    sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise DarwinError(f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS_LIMIT}, "
                              f"not {self.max_new_tokens!r}.")
        if self.sample and not (math.isfinite(self.temperature) and 0 < self.temperature <= 5):
            raise DarwinError(f"The temperature must be above 0 and at most 5, not {self.temperature!r}.")
        if self.sample and not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise DarwinError(f"top_p must be above 0 and at most 1, not {self.top_p!r}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Sampling":
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DarwinError(f"Unknown sampling setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}.")
        try:
            return cls(sample=bool(data.get("sample", False)), temperature=float(data.get("temperature", cls.temperature)),
                       top_p=float(data.get("top_p", cls.top_p)),
                       max_new_tokens=int(data.get("max_new_tokens", cls.max_new_tokens)), seed=int(data.get("seed", 0)))
        except (TypeError, ValueError):
            raise DarwinError("Sampling settings are numbers: temperature, top_p, max_new_tokens and seed.") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings that decide the answers (temperature and top_p only when sampling)."""
        out = asdict(self)
        if not self.sample:
            for unused in ("temperature", "top_p", "seed"):
                del out[unused]
        return out


def check_prompt(prompt: Any, *, limit: int | None) -> str:
    """The prompt as given; one sentence when it is empty or longer than this server allows."""
    text = prompt if isinstance(prompt, str) else ""
    if not text.strip():
        raise DarwinError("Type a prompt for the models to answer.")
    if limit is not None and len(text) > limit:
        raise DarwinError(f"The prompt is {len(text)} characters long; prompts are limited to {limit} on this server.")
    return text


def chat_text(father_tokenizer: Any, prompt: str) -> tuple[str, bool]:
    """(the text every model reads, whether the father's chat template wrapped it)."""
    if not getattr(father_tokenizer, "chat_template", None):
        return prompt, False
    text = father_tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
    return text, True


def generate_answer(model: Any, tokenizer: Any, text: str, sampling: Sampling, *, templated: bool) -> str:
    """The model's continuation of `text` (special tokens dropped, the prompt not included)."""
    import torch

    # A chat template already writes the begin-of-sequence token; encoding it again would double it.
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=not templated)
    device = next(model.parameters()).device
    input_ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    options: dict[str, Any] = {"do_sample": sampling.sample, "max_new_tokens": sampling.max_new_tokens,
                               "pad_token_id": pad_id}
    if sampling.sample:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        torch.manual_seed(sampling.seed)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=mask, **options)
    return tokenizer.decode(output[0, input_ids.shape[1]:].tolist(), skip_special_tokens=True)


def chat_run(run_dir: str | Path, prompt: str, models: Sequence[str], sampling: Sampling, *,
             device: str = "cpu") -> dict[str, Any]:
    """Each model's answer to `prompt`, one model loaded at a time: {"answers": [{model, label, answer,
    seconds}], "prompt", "templated", "sampling", "device"}."""
    from transformers import AutoTokenizer

    from darwin_core.chat.models import check_models, model_label, parent_folder, loaded_model

    run_dir = Path(run_dir)
    names = check_models(run_dir, models)
    text, templated = chat_text(AutoTokenizer.from_pretrained(parent_folder(run_dir, "father")), prompt)
    answers = []
    for name in names:
        start = time.monotonic()
        with loaded_model(run_dir, name, device) as (model, tokenizer):
            answer = generate_answer(model, tokenizer, text, sampling, templated=templated)
        answers.append({"model": name, "label": model_label(run_dir, name), "answer": answer,
                        "seconds": round(time.monotonic() - start, 3)})
    return {"run": run_dir.name, "prompt": prompt, "templated": templated, "sampling": sampling.to_dict(),
            "device": device, "answers": answers}
