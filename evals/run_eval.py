"""`deltamem eval`: memory quality of an adapter and of its frozen backbone, measured in the same run.

Sets and questions: eval_sets.py; regimes: regimes.py. The frozen backbone is the same model with memory switched
off. A regime without memory (no_context, context_only, window_only) is the same computation for both, since an
empty memory reproduces the frozen model exactly (tests/runtime check it bit for bit): it is run once and reported
on both rows. Generation is greedy, through the serving engine (questions batched), scored by containment recall
(the normalised gold value inside the normalised answer) and LoCoMo token F1, per category for LoCoMo files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from deltamem.evals.eval_sets import SYNTHETIC_SETS, EvalSet, Question, locomo_set, synthetic_set
from deltamem.evals.locomo_score import exact_match_recall, score_qa, summarize
from deltamem.evals.regimes import (
    REGIMES,
    USES_STATE,
    WINDOW_REGIMES,
    WITHOUT_STATE,
    context_messages,
    evidence_outside_window,
    fitted_prompt,
    parse_regimes,
    write_chunks,
)
from deltamem.evals.synthetic import history_messages
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 40  # conversations per set
    seed: int = 0
    max_new_tokens: int = 16
    window_tokens: int = 48
    write_chunk_tokens: int = 4096  # histories are written in chunks of whole messages of at most this many tokens
    regimes: str = "all"  # or a comma-separated list (see regimes.py)
    sets: str = ",".join(SYNTHETIC_SETS)  # synthetic sets to run
    locomo: str = ""  # a locomo10.json path: evaluate on it instead of the synthetic sets

    def __post_init__(self) -> None:
        parse_regimes(self.regimes)
        if self.samples < 1 or self.max_new_tokens < 1 or self.window_tokens < 1 or self.write_chunk_tokens < 64:
            raise ValueError("samples, max_new_tokens and window_tokens must be >= 1, write_chunk_tokens >= 64")
        unknown = set(self.set_names) - set(SYNTHETIC_SETS)
        if not self.locomo and (unknown or not self.set_names):
            raise ValueError(f"unknown set(s) {sorted(unknown)}; choose from {', '.join(SYNTHETIC_SETS)}")

    @property
    def set_names(self) -> list[str]:
        return [name.strip() for name in self.sets.split(",") if name.strip()]


def answer(engine, state, prompt: list[int], max_new_tokens: int) -> str:
    """Greedy, read-only: nothing this call does changes `state`."""
    request = GenerationRequest(tuple(prompt), max_new_tokens=max_new_tokens, write_input=False, write_output=False)
    for event in engine.generate(state, request):
        if isinstance(event, GenerationOutcome):
            return event.text
    raise RuntimeError("the engine ended a generation without an outcome")


def write_history(engine, history: list[dict], chunk_tokens: int):
    state = engine.empty_state()
    for ids, owners in write_chunks(engine.tokenizer, history, chunk_tokens):
        state, _ = engine.write(state, EncodedInput(tuple(ids), tuple(owners)))
    return state


class SetRun:
    """One set's prompts and memories, and its predictions per (regime, memory on/off)."""

    def __init__(self, engine, eval_set: EvalSet, config: EvalConfig, regimes: tuple[str, ...]):
        self.engine, self.set, self.config = engine, eval_set, config
        tokenizer = engine.tokenizer
        limit = engine.model.backbone.config.max_position_embeddings - config.max_new_tokens
        self.histories = [history_messages(sample) for sample in eval_set.samples]
        self.regimes = tuple(r for r in regimes if r != "state_other" or eval_set.other)  # a lone LoCoMo sample: none
        # what runs: the chosen regimes and, for each state regime, its regime without state (the frozen row)
        self.asked = tuple(r for r in REGIMES if r in self.regimes or r in {WITHOUT_STATE.get(x) for x in self.regimes})
        self.prompts: dict[tuple[str, int], list[int]] = {}
        self.truncated = dict.fromkeys(self.asked, 0)
        self.outside: dict[int, bool] = {}
        for question in eval_set.questions:
            history = self.histories[question.sample]
            window = context_messages(tokenizer, "window_only", history, config.window_tokens)
            self.outside[question.index] = evidence_outside_window(
                eval_set.samples[question.sample], question.item, history, window
            )
            for regime in self.asked:
                context = context_messages(tokenizer, regime, history, config.window_tokens)
                prompt, cut = fitted_prompt(tokenizer, context, question.text, limit)
                self.prompts[regime, question.index] = prompt
                self.truncated[regime] += cut
        self.states: dict[int, object] = {}
        self.other_states: dict[int, object] = {}

    def jobs(self, memory: bool) -> list[tuple]:
        """(set run, regime, question, state) to generate: with memory on the state regimes, else the others."""
        wanted = [r for r in self.asked if (r in USES_STATE) == memory]
        if memory and wanted:
            self._write_memories("state_other" in wanted)
        empty = self.engine.empty_state()
        jobs = []
        for regime in wanted:
            for q in self.set.questions:
                if regime in WINDOW_REGIMES and not self.outside[q.index]:
                    continue
                state = empty
                if regime == "state_other":
                    state = self.other_states[q.sample]
                elif regime in USES_STATE:
                    state = self.states[q.sample]
                jobs.append((self, regime, q, state))
        return jobs

    def _write_memories(self, with_other: bool) -> None:
        chunk = self.config.write_chunk_tokens
        for index, history in enumerate(self.histories):
            self.states[index] = write_history(self.engine, history, chunk)
        if with_other:
            for index, sample in enumerate(self.set.other):
                self.other_states[index] = write_history(self.engine, history_messages(sample), chunk)


def run_jobs(engine, jobs: list[tuple], max_new_tokens: int, progress=None) -> list[str]:
    """Greedy answers to `jobs` ((set run, regime, question, state)), as many at once as the engine batches."""

    def run(job):
        set_run, regime, question, state = job
        text = answer(engine, state, set_run.prompts[regime, question.index], max_new_tokens)
        if progress is not None:
            progress()
        return text

    with ThreadPoolExecutor(max_workers=engine.max_batch) as pool:
        return list(pool.map(run, jobs))


def score(questions: list[Question], predictions: list[str], locomo: bool) -> dict:
    if not questions:
        return {"questions": 0}
    f1s = [score_qa(q.item, p) for q, p in zip(questions, predictions, strict=True)]
    recalls = [exact_match_recall(p, str(q.item["answer"])) for q, p in zip(questions, predictions, strict=True)]
    result = {"questions": len(questions), "recall": _mean(recalls), "f1": _mean(f1s)}
    if locomo:
        result["categories"] = summarize((q.item["category"], f) for q, f in zip(questions, f1s, strict=True))
        return result
    for person in ("self", "a", "b"):
        chosen = [r for q, r in zip(questions, recalls, strict=True) if q.person == person]
        result[f"recall_{person}"] = _mean(chosen)
    result["recall_changed"] = _mean([r for q, r in zip(questions, recalls, strict=True) if q.item.get("changed")])
    return result


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate(engine, config: EvalConfig, progress=None) -> dict:
    """Scores of the adapter and of the frozen backbone per set and regime, with every prediction."""
    started = time.monotonic()
    regimes = parse_regimes(config.regimes)
    if config.locomo:
        from deltamem.evals.loaders import load_locomo

        sets = [locomo_set(load_locomo(Path(config.locomo))[: config.samples])]
    else:
        sets = [synthetic_set(name, config.samples, config.seed) for name in config.set_names]
    runs = [SetRun(engine, s, config, regimes) for s in sets]
    tick = (lambda: progress(1)) if progress is not None else None
    model = engine.model
    model.memory_enabled = False
    try:
        frozen_jobs = [job for run in runs for job in run.jobs(memory=False)]
        if progress is not None:
            progress(0, total=len(frozen_jobs))
        frozen_texts = run_jobs(engine, frozen_jobs, config.max_new_tokens, tick)
    finally:
        model.memory_enabled = True
    memory_jobs = [job for run in runs for job in run.jobs(memory=True)]
    if progress is not None:
        progress(0, total=len(frozen_jobs) + len(memory_jobs))
    memory_texts = run_jobs(engine, memory_jobs, config.max_new_tokens, tick)
    predictions: dict[tuple[str, str, int], str] = {}  # (set, regime, question) -> text
    for (run, regime, q, _state), text in zip(frozen_jobs + memory_jobs, frozen_texts + memory_texts, strict=True):
        predictions[run.set.name, regime, q.index] = text
    results = {"config": asdict(config), "sets": {}, "predictions": []}
    for run in runs:
        results["sets"][run.set.name] = _set_scores(run, predictions, locomo=bool(config.locomo))
        for q in run.set.questions:
            results["predictions"].append(
                {
                    "set": run.set.name,
                    "sample_id": run.set.samples[q.sample]["sample_id"],
                    "question": q.text,
                    "gold": q.item["answer"],
                    "person": q.person,
                    "category": q.item.get("category"),
                    "changed": q.item.get("changed"),
                    "evidence_outside_window": run.outside[q.index],
                    "answers": {
                        r: predictions[run.set.name, r, q.index]
                        for r in run.asked
                        if (run.set.name, r, q.index) in predictions
                    },
                }
            )
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    return results


def _set_scores(run: SetRun, predictions, locomo: bool) -> dict:
    """{"adapter": {regime: scores}, "frozen": {regime: scores}, "truncated": {regime: count}}: a state regime of
    the frozen model is its regime without state (memory off)."""
    scores = {"adapter": {}, "frozen": {}, "truncated": {r: run.truncated[r] for r in run.regimes}}
    for regime in run.regimes:
        questions = [q for q in run.set.questions if regime not in WINDOW_REGIMES or run.outside[q.index]]
        base = WITHOUT_STATE.get(regime, regime)
        frozen = [predictions[run.set.name, base, q.index] for q in questions]
        adapter = [predictions[run.set.name, regime, q.index] for q in questions] if regime in USES_STATE else frozen
        scores["adapter"][regime] = score(questions, adapter, locomo)
        scores["frozen"][regime] = score(questions, frozen, locomo)
    return scores


TARGETS = (  # the targets of the memory-quality work, on unseen values (issue 15)
    ("state_only recall, one fact", "single/unseen", "state_only", None, 0.5),
    ("state_only recall, 3+ facts", "multi/unseen", "state_only", None, 0.3),
    ("window_state - window_only, outside the window", "multi/unseen", "window_state", "window_only", 0.25),
    ("context_state - context_only", "multi/unseen", "context_state", "context_only", 0.0),
    ("no_context - state_other (control)", "multi/unseen", "no_context", "state_other", -0.05),
)


def targets(results: dict) -> list[dict]:
    """Each target with the adapter's figure and whether it holds (None where the run did not measure it)."""
    found = []
    for label, set_name, regime, minus, threshold in TARGETS:
        adapter = results["sets"].get(set_name, {}).get("adapter", {})
        value = adapter.get(regime, {}).get("recall")
        if minus is not None:
            other = adapter.get(minus, {}).get("recall")
            value = None if value is None or other is None else value - other
        found.append({"target": label, "set": set_name, "value": value, "threshold": threshold,
                      "holds": None if value is None else value >= threshold})  # fmt: skip
    return found


def table(results: dict) -> str:
    lines = []
    for name, scores in results["sets"].items():
        metric = "recall" if name != "locomo" else "f1"
        lines.append(f"{name}: {metric} (adapter / frozen), F1 (adapter / frozen), questions")
        for regime, adapter in scores["adapter"].items():
            frozen = scores["frozen"][regime]
            if not adapter["questions"]:
                lines.append(f"  {regime:<14} no question has its evidence outside the window")
                continue
            cut = scores["truncated"].get(regime, 0)
            note = f"  ({cut} prompts truncated to the context length)" if cut else ""
            lines.append(
                f"  {regime:<14}{adapter[metric]:>7.3f} /{frozen[metric]:>6.3f}"
                f"{adapter['f1']:>9.3f} /{frozen['f1']:>6.3f}{adapter['questions']:>6}{note}"
            )
    checks = [t for t in targets(results) if t["value"] is not None]
    if checks:
        lines.append("targets on unseen values:")
        for t in checks:
            verdict = "holds" if t["holds"] else "MISSED"
            lines.append(f"  {t['target']:<48}{t['value']:>7.3f}  (>= {t['threshold']:.2f}: {verdict})")
    lines.append(f"({results['wall_seconds']} s)")
    return "\n".join(lines)


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="deltamem eval", description="Measure memory quality, adapter and frozen backbone in the same run."
    )
    parser.add_argument("--model", type=Path, help="HF model directory (default: the embedded model)")
    parser.add_argument("--adapter", type=Path, help="adapter directory (default: the shipped trained adapter)")
    parser.add_argument("--untrained-adapter", action="store_true", help="evaluate the untrained reference init")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="write the results (with every prediction) here as JSON")
    parser.add_argument("--max-batch", type=int, default=8, help="questions generated at once")
    for name, default in asdict(EvalConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    try:
        config = EvalConfig(**{name: getattr(args, name) for name in asdict(EvalConfig())})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.locomo and not Path(config.locomo).is_file():
        print(f"error: {config.locomo} is not a file", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from deltamem.evals.loading import load_for
    from deltamem.runtime.engine.batch_engine import BatchEngine

    _model_dir, loaded = load_for(args)
    engine = BatchEngine(loaded, max_batch=args.max_batch)
    try:
        with tqdm(desc="evaluating", unit="answer") as bar:

            def progress(step: int, total: int | None = None) -> None:
                if total is not None:
                    bar.total = total
                    bar.refresh()
                bar.update(step)

            results = evaluate(engine, config, progress=progress)
    finally:
        engine.close()
    results["adapter_dir"] = str(args.adapter) if args.adapter else "default"
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0
