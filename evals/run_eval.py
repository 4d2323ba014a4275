"""`deltamem eval`: memory quality in five regimes, for an adapter and for its frozen backbone in the same run.

Regimes (what the model sees when asked a question about a conversation):
  no_context     the question alone, empty memory
  state_only     the question alone, the history written into memory
  context_only   the history in the prompt, empty memory
  context_state  the history in the prompt and in memory (how the published gains were measured)
  window_state   the last turns within `window_tokens` in the prompt, the whole history in memory
  state_other    a control: the question alone, with ANOTHER conversation's history in memory. Where it scores
                 as well as state_only, the adapter's answers do not come from what memory holds.
The frozen backbone is the same model with memory switched off, so its state regimes equal the matching
regimes without state; they are measured once and reported on both rows. Generation is greedy, through the
serving engine (many questions batched at once), and scored with exact-match recall of the gold value and
LoCoMo token F1.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from deltamem.evals.locomo_score import exact_match_recall, score_qa
from deltamem.evals.prompts import encode_chat, question_prompt, window_messages
from deltamem.evals.synthetic import build, history_messages
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest

REGIMES = ("no_context", "state_only", "context_only", "context_state", "window_state", "state_other")
USES_STATE = frozenset({"state_only", "context_state", "window_state", "state_other"})
# with memory off, a regime is the same run as its twin; window_state with memory off is the window alone
FROZEN_TWIN = {
    "no_context": "no_context",
    "state_only": "no_context",
    "context_only": "context_only",
    "context_state": "context_only",
    "window_state": "window_state",
    "state_other": "no_context",
}


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 40  # held-out synthetic conversations
    seed: int = 0
    max_new_tokens: int = 12
    window_tokens: int = 48
    locomo: str = ""  # a locomo10.json path: evaluate on it instead of the synthetic split


@dataclass
class Question:
    sample: int
    text: str
    item: dict  # the QA item (answer, category) the prediction is scored against


def questions_of(sample_index: int, sample: dict, synthetic: bool) -> list[Question]:
    """The questions asked after a conversation: first person for synthetic data (the user is speaker A)."""
    found = []
    for item in sample["qa"]:
        if item.get("category") == 5 or "answer" not in item:
            continue
        text = item.get("question_self", item["question"]) if synthetic else item["question"]
        found.append(Question(sample_index, text, item))
    return found


def prompt_for(tokenizer, regime: str, history: list[dict], question: str, window_tokens: int) -> list[int]:
    if regime in ("no_context", "state_only", "state_other"):
        context: list[dict] = []
    elif regime in ("context_only", "context_state"):
        context = history
    else:
        context = window_messages(tokenizer, history, window_tokens)
    return question_prompt(tokenizer, question, context)


def answer(engine, state, prompt: list[int], max_new_tokens: int) -> str:
    """Greedy, read-only: nothing this call does changes `state`."""
    request = GenerationRequest(tuple(prompt), max_new_tokens=max_new_tokens, write_input=False, write_output=False)
    for event in engine.generate(state, request):
        if isinstance(event, GenerationOutcome):
            return event.text
    raise RuntimeError("the engine ended a generation without an outcome")


def run_regimes(engine, samples, questions, regimes, config: EvalConfig, progress=None) -> dict[str, list[str]]:
    """Predictions per regime, in question order; states are written once per conversation."""
    tokenizer = engine.tokenizer
    histories = [history_messages(sample) for sample in samples]
    empty = engine.empty_state()
    states = {}
    if USES_STATE.intersection(regimes) and engine.model.memory_enabled:
        for index, history in enumerate(histories):
            ids, owners = encode_chat(tokenizer, history, add_generation_prompt=False)
            states[index], _ = engine.write(empty, EncodedInput(tuple(ids), tuple(owners)))

    def memory(regime: str, sample: int):
        if regime not in USES_STATE:
            return empty
        if regime == "state_other":  # the next conversation's memory (a different speaker and facts)
            sample = (sample + 1) % len(histories)
        return states.get(sample, empty)

    jobs = [(regime, memory(regime, q.sample), q) for regime in regimes for q in questions]
    workers = getattr(engine, "max_batch", 1)

    def run(job):
        regime, state, q = job
        prompt = prompt_for(tokenizer, regime, histories[q.sample], q.text, config.window_tokens)
        text = answer(engine, state, prompt, config.max_new_tokens)
        if progress is not None:
            progress()
        return regime, text

    predictions: dict[str, list[str]] = {regime: [] for regime in regimes}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for regime, text in pool.map(run, jobs):
            predictions[regime].append(text)
    return predictions


def score(questions: list[Question], predictions: list[str], synthetic: bool) -> dict:
    recalls = [exact_match_recall(p, str(q.item["answer"])) for q, p in zip(questions, predictions, strict=True)]
    f1s = [score_qa(q.item, p) for q, p in zip(questions, predictions, strict=True)]
    result = {"questions": len(questions), "f1": sum(f1s) / len(f1s)}
    if synthetic:
        result["recall"] = sum(recalls) / len(recalls)
        changed = [r for q, r in zip(questions, recalls, strict=True) if q.item.get("changed")]
        result["recall_changed"] = sum(changed) / len(changed) if changed else None
    return result


def evaluate(engine, config: EvalConfig, progress=None) -> dict:
    """Scores of the adapter and of the frozen backbone in every regime, with example predictions."""
    synthetic = not config.locomo
    if synthetic:
        samples = build("heldout", config.samples, config.seed)
    else:
        from deltamem.evals.loaders import load_locomo

        samples = load_locomo(Path(config.locomo))[: config.samples]
    questions = [q for i, sample in enumerate(samples) for q in questions_of(i, sample, synthetic)]
    model = engine.model
    adapter = run_regimes(engine, samples, questions, REGIMES, config, progress)
    model.memory_enabled = False
    try:
        frozen_runs = run_regimes(engine, samples, questions, sorted(set(FROZEN_TWIN.values())), config, progress)
    finally:
        model.memory_enabled = True
    frozen = {regime: frozen_runs[FROZEN_TWIN[regime]] for regime in REGIMES}
    return {
        "config": asdict(config),
        "data": "synthetic heldout" if synthetic else config.locomo,
        "adapter": {regime: score(questions, adapter[regime], synthetic) for regime in REGIMES},
        "frozen": {regime: score(questions, frozen[regime], synthetic) for regime in REGIMES},
        "examples": [
            {"question": q.text, "gold": q.item["answer"], **{r: adapter[r][i] for r in REGIMES}}
            for i, q in enumerate(questions[:6])
        ],
    }


def table(results: dict) -> str:
    metric = "recall" if "recall" in results["adapter"]["no_context"] else "f1"
    lines = [f"{'regime':<15}{'adapter ' + metric:>18}{'frozen ' + metric:>18}{'adapter F1':>12}{'frozen F1':>11}"]
    for regime in REGIMES:
        a, f = results["adapter"][regime], results["frozen"][regime]
        lines.append(f"{regime:<15}{a[metric]:>18.3f}{f[metric]:>18.3f}{a['f1']:>12.3f}{f['f1']:>11.3f}")
    lines.append(f"({results['adapter']['no_context']['questions']} questions; {results['data']})")
    return "\n".join(lines)


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deltamem eval", description="Measure memory quality in five regimes.")
    parser.add_argument("--model", type=Path, help="HF model directory (default: the embedded model)")
    parser.add_argument("--adapter", type=Path, help="adapter directory (default: the shipped trained adapter)")
    parser.add_argument("--untrained-adapter", action="store_true", help="evaluate the untrained reference init")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--max-batch", type=int, default=8, help="questions generated at once")
    for name, default in asdict(EvalConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from deltamem.evals.cli import load_for
    from deltamem.runtime.engine.batch_engine import BatchEngine

    config = EvalConfig(**{name: getattr(args, name) for name in asdict(EvalConfig())})
    if config.locomo and not Path(config.locomo).is_file():
        print(f"error: {config.locomo} is not a file", file=sys.stderr)
        return 2
    _model_dir, loaded = load_for(args)
    engine = BatchEngine(loaded, max_batch=args.max_batch)
    try:
        with tqdm(desc="evaluating", unit="answer") as bar:
            results = evaluate(engine, config, progress=bar.update)
    finally:
        engine.close()
    results["adapter_dir"] = str(args.adapter) if args.adapter else "default"
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0
