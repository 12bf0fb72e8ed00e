"""`python -m darwin_core chat RUN --prompt TEXT`: a run's child and both parents answer one prompt.

The same answers the page's Try-it tab shows (`darwin_core.chat`), computed in this process, one model loaded
at a time; `--models` picks others (a candidate the search measured, by name: `--list` shows them).
"""

from __future__ import annotations

import argparse
import json

from darwin_core.chat.answer import Sampling, chat_run, check_prompt
from darwin_core.chat.models import CHILD_MODEL, model_choices
from darwin_core.cli.card import run_folder

DEFAULT_MODELS = f"{CHILD_MODEL},father,mother"


def _device(name: str) -> str:
    from darwin_core.evolution.child import resolve_device

    return str(resolve_device(name))


def _run_chat(args: argparse.Namespace) -> int:
    run_dir = run_folder(args.run, args.runs_dir)
    if args.list:
        for label, name in model_choices(run_dir):
            print(f"{name}\t{label}")
        return 0
    prompt = check_prompt(args.prompt, limit=None)
    sampling = Sampling.from_dict({"sample": args.sample, "temperature": args.temperature, "top_p": args.top_p,
                                   "max_new_tokens": args.max_new_tokens, "seed": args.seed})
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    result = chat_run(run_dir, prompt, models, sampling, device=_device(args.device))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for answer in result["answers"]:
        print(f"== {answer['model']}: {answer['label']} ==")
        print(answer["answer"])
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="Talk to a run's child and both parents (one prompt, side by side).",
                                   description="Each chosen model answers the prompt, wrapped in the father's chat "
                                   "template when his tokenizer has one; greedy unless --sample.")
    parser.add_argument("run", help="a run id (in --runs-dir) or a run folder (runs/<id>)")
    parser.add_argument("--prompt", help="what the models answer (required unless --list)")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated: child, father, mother, or candidate names (default {DEFAULT_MODELS})")
    parser.add_argument("--list", action="store_true", help="list the models of the run one can talk to, then exit")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=Sampling.temperature, help="sampling temperature")
    parser.add_argument("--top-p", type=float, default=Sampling.top_p, help="nucleus sampling threshold")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (the same seed gives the same answers)")
    parser.add_argument("--max-new-tokens", type=int, default=Sampling.max_new_tokens, help="answer length in tokens")
    parser.add_argument("--device", default="auto", help="auto (the first GPU if any), cpu, cuda, cuda:1, ...")
    parser.add_argument("--runs-dir", default=None, help="runs folder (default: $DARWIN_RUNS_DIR or ./runs)")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.set_defaults(func=_run_chat)
