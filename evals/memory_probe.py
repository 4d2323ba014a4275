"""A quick, teacher-forced measure of whether an adapter's memory carries unseen values (minutes, not the hour of
`deltamem eval`): one-fact held-out histories with UNSEEN values, half written as chat turns and half as bare
UpdateMemory text, then the question alone (state only) with the gold answer forced.

    .venv/bin/python -m deltamem.evals.memory_probe --adapter DIR [--examples 48]

Prints, for the adapter with its own memory, with another example's memory and with an empty memory (= the
frozen model), the cross-entropy of the value's tokens and the accuracy of the value's first token. A memory
that carries the value has own < other; other ≈ empty says the memory does no generic harm. Used to compare
training recipes in docs/results.md; `deltamem eval` gives the generated-answer figures.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from torch.nn import functional as F

from deltamem.evals.fitted_init import fitted_init
from deltamem.evals.prompts import answer_ids, question_prompt
from deltamem.evals.synthetic import build
from deltamem.evals.train import FIT_EXAMPLES, focused_examples, pad, value_labels
from deltamem.runtime.model.adapter_config import DeltaMemConfig

MEMORIES = ("own", "other", "empty")


@torch.no_grad()
def probe(model, tokenizer, examples) -> dict:
    """{memory: {value_ce, first_token_accuracy}} over `examples` (one question each), state only."""
    device = model.adapters[0].beta_bias.device
    ids = pad([e.history for e in examples], 0, device)
    real = pad([[1] * len(e.history) for e in examples], 0, device).bool()
    written = model(ids, model.empty_state(len(examples), device), write=True, write_mask=real, logits_to_keep=1)
    rows, labels = [], []
    for example in examples:
        question, answer = example.pairs[0]
        prompt, reply = question_prompt(tokenizer, question), answer_ids(tokenizer, answer)
        rows.append(prompt + reply)
        labels.append([-100] * len(prompt) + value_labels(tokenizer, reply, example.values[0]))
    inputs, wanted = pad(rows, 0, device), pad(labels, -100, device)[:, 1:]
    counted = wanted != -100
    first = counted.float().argmax(1)
    every = torch.arange(len(rows), device=device)
    states = {"own": written.state, "other": written.state.roll(1, 0), "empty": torch.zeros_like(written.state)}
    results = {}
    for name in MEMORIES:
        logits = model(inputs, states[name], write=False).logits[:, :-1]
        loss = F.cross_entropy(logits.transpose(1, 2), wanted.clamp(min=0), reduction="none") * counted
        hits = logits[every, first].argmax(-1) == wanted[every, first]
        results[name] = {
            "value_ce": round((loss.sum() / counted.sum()).item(), 3),
            "first_token_accuracy": round(hits.float().mean().item(), 3),
        }
    return results


def probe_examples(tokenizer, count: int, seed: int):
    """`count` one-fact held-out examples with unseen values, templates and names; half as bare text."""
    samples = build("heldout", count, seed, values="heldout")
    examples = focused_examples(tokenizer, samples, seed, False, 0.0, 0.5)
    random.Random(seed).shuffle(examples)
    return examples[:count]


def main(argv=None) -> None:
    from deltamem.runtime.model.backbone import load_model
    from deltamem.runtime.model.default_model import default_adapter_dir, prepare_default_model
    from deltamem.service.config import configure_kernels, default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="adapter directory (default: the shipped one)")
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fitted-init", action="store_true", help="probe the untrained adapter after the fitted init (step 0)"
    )
    parser.add_argument("--num-state-heads", type=int, default=1, help="with --fitted-init: states per layer")
    args = parser.parse_args(argv)
    configure_kernels()
    model_dir = prepare_default_model(default_cache_dir())
    if args.fitted_init:
        loaded = load_model(model_dir, None, init_config=DeltaMemConfig(num_state_heads=args.num_state_heads))
    else:
        loaded = load_model(model_dir, default_adapter_dir(None, args.adapter, False))
    loaded.model.eval()
    if args.fitted_init:
        samples = build("train", FIT_EXAMPLES, 0)
        fit = focused_examples(loaded.tokenizer, samples, 0, False, 0.0, 0.5)
        print(json.dumps(fitted_init(loaded.model, random.Random(0).sample(fit, min(FIT_EXAMPLES, len(fit))))))
    examples = probe_examples(loaded.tokenizer, args.examples, args.seed)
    name = "fitted init" if args.fitted_init else str(args.adapter or "shipped")
    print(json.dumps({"adapter": name, **probe(loaded.model, loaded.tokenizer, examples)}))


if __name__ == "__main__":
    main()
