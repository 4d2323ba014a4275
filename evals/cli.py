"""`deltamem train` and `deltamem eval`: adapter training and memory-quality evaluation from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from deltamem.evals.loading import load_for
from deltamem.evals.train import TrainConfig
from deltamem.runtime.model.adapter_config import DeltaMemConfig


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltamem train", description="Train a δ-mem adapter (reference recipe).")
    parser.add_argument("--model", type=Path, help="HF Llama/Qwen3/SmolLM3 directory (default: the embedded model)")
    parser.add_argument("--out", type=Path, required=True, help="adapter directory (reference format), made or resumed")
    parser.add_argument("--init", type=Path, help="start from this adapter instead of the reference init")
    parser.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    parser.add_argument(
        "--beta-bias-init",
        type=float,
        default=DeltaMemConfig.beta_bias_init,
        help="initial write-gate bias of a new adapter: sigmoid(b) is the starting write strength and 1 - it the "
        "per-token decay (default %(default)s, the reference's)",
    )
    parser.add_argument(
        "--num-state-heads",
        type=int,
        default=DeltaMemConfig.num_state_heads,
        help="independent 8x8 states per layer of a new adapter: 1 = TSW, 4 = the paper's MSW (read width 32); "
        "ignored with --init (default %(default)s)",
    )
    for field in fields(TrainConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    return parser


def train_main(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    from tqdm import tqdm

    from deltamem.evals.train import train

    try:
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _model_dir, loaded = load_for(args)
    bar = tqdm(total=config.steps, desc="training", unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    try:
        log = train(loaded.model, loaded.tokenizer, args.out, config, resume=args.resume, progress=progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(json.dumps({"adapter": str(args.out), "steps": len(log), "final_loss": log[-1]["loss"] if log else None}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`deltamem-evals train|eval ...` (also reached as `deltamem train|eval ...`)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING)
    commands = {"train": train_main}
    try:
        from deltamem.evals.run_eval import eval_main

        commands["eval"] = eval_main
    except ImportError:
        pass
    if not argv or argv[0] not in commands:
        print(f"usage: deltamem {{{'|'.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
