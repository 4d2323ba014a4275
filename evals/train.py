"""`deltamem train`: the reference recipe for a δ-mem adapter on a frozen backbone.

Per example: (1) a write pass over the conversation history with writes on, keeping the graph through the
state; (2) a read pass, writes off, in which every token reads that final state: the question (after the last
turn of the history, except on state-only steps, where the history is visible only through memory) and the
answer, with cross-entropy on the answer only. Plus the gate regulariser 0.01 * (mean beta - 0.05)^2. AdamW,
linear warm-up then cosine. Only the adapter trains; checkpoints are in the reference format, and the run
resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from deltamem.evals.conversation import session_numbers
from deltamem.evals.prompts import answer_ids, encode_chat, question_prompt
from deltamem.evals.synthetic import build, history_messages, to_training
from deltamem.runtime.model.checkpoint import save_adapter
from deltamem.runtime.model.memory_model import MemoryModel

TRAINER_STATE = "trainer_state.pt"
GATE_TARGET = 0.05
FOCUS_HISTORIES = ("turns", "statement")
# "value": only the gold value's tokens inside the answer sentence carry loss. The sentence around it follows from
# the question alone, so with "answer" most of the loss teaches the answer's form and little of it needs memory.
TARGETS = ("answer", "value")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 8  # examples per optimizer step, run as one padded batch
    lr: float = 2e-4  # the reference's; small models on few steps want more (see docs/results.md)
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    state_only_fraction: float = 0.2  # read passes that see no history turn: memory only
    focus_fraction: float = 0.0  # examples cut to one question's evidence turns (a curriculum; 0 = the reference)
    focus_history: str = "turns"  # focused examples keep the evidence turns with their replies, or the statement alone
    target: str = "answer"  # cross-entropy on the whole answer, or only on the tokens of its gold value
    gate_weight: float = 0.01
    examples: int = 2000  # synthetic training conversations
    data_seed: int = 0
    seed: int = 0
    max_history_tokens: int = 8192
    save_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.examples < 1 or self.save_every < 1:
            raise ValueError("steps, batch_size, examples and save_every must be >= 1")
        if not 0 <= self.state_only_fraction <= 1 or not 0 <= self.focus_fraction <= 1:
            raise ValueError("state_only_fraction and focus_fraction must be in [0, 1]")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.focus_history not in FOCUS_HISTORIES:
            raise ValueError(f"focus_history must be one of {FOCUS_HISTORIES}, got {self.focus_history!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")


@dataclass
class Example:
    """One training conversation as ids: the history, and each (question, answer) asked after it."""

    history: list[int]
    history_message_ids: list[int]
    last_turn: list[dict]
    pairs: list[tuple[str, str]]
    values: list[str]  # each pair's gold value (the short answer), for target="value"


def as_example(tokenizer, messages: list[dict], pairs: list[tuple[str, str]], values: list[str]) -> Example:
    ids, owners = encode_chat(tokenizer, messages, add_generation_prompt=False)
    return Example(ids, owners, messages[-2:], pairs, values)


def synthetic_examples(tokenizer, count: int, seed: int) -> list[Example]:
    """The project's synthetic train split, first-person questions with sentence answers."""
    examples = []
    for sample in build("train", count, seed):
        training = to_training(sample, first_person=True, sentence_answers=True)
        values = [str(item["answer"]) for item in sample["qa"]]
        examples.append(as_example(tokenizer, training.messages, training.pairs, values))
    return examples


def focused_examples(tokenizer, count: int, seed: int, with_replies: bool = True) -> list[Example]:
    """Per question, a history of only the turns its evidence names (and, `with_replies`, the replies to them):
    one fact in memory. The easiest case; mixed in, it teaches the gates and values to store a fact before the
    keys must tell several facts apart."""
    examples = []
    for sample in build("train", count, seed):
        messages = history_messages(sample)
        turn_ids = [
            turn["dia_id"]
            for n in session_numbers(sample["conversation"])
            for turn in sample["conversation"][f"session_{n}"]
        ]
        for item in sample["qa"]:
            keep = set()
            for evidence in item["evidence"]:
                index = turn_ids.index(evidence)
                keep.update(i for i in (index, index + 1)[: 2 if with_replies else 1] if i < len(messages))
            history = [messages[i] for i in sorted(keep)]
            pair = (item["question_self"], item["answer_sentence_self"])
            examples.append(as_example(tokenizer, history, [pair], [str(item["answer"])]))
    return examples


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine to 0 (step counts from 0)."""
    warmup = max(1, round(config.steps * config.warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def trainable_parameters(model: MemoryModel) -> list[torch.nn.Parameter]:
    """The adapter's trained tensors (the zero k/v corrections of the format stay zero); the backbone is frozen."""
    model.requires_grad_(False)
    params = []
    for adapter in model.adapters:
        for name, param in adapter.named_parameters():
            if name not in ("delta_k_proj", "delta_v_proj"):
                param.requires_grad_(True)
                params.append(param)
    return params


def pad(rows: list[list[int]], value: int, device) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], device=device)


def batch_loss(model: MemoryModel, tokenizer, examples: list[Example], state_only: list[bool], config: TrainConfig):
    """(answer cross-entropy, gate regulariser) for a batch: write each history (right-padded, padding masked
    out of the writes), then answer every question of every example reading its example's final state."""
    device = model.adapters[0].beta_bias.device
    histories = [example.history[-config.max_history_tokens :] for example in examples]
    ids = pad(histories, 0, device)
    real = pad([[1] * len(h) for h in histories], 0, device).bool()
    message_ids = None
    if model.writes_messages:
        owners = [example.history_message_ids[-config.max_history_tokens :] for example in examples]
        message_ids = pad(owners, -1, device)
    written = model(
        ids,
        model.empty_state(len(examples), device),
        write=True,
        write_mask=None if model.writes_messages else real,
        message_ids=message_ids,
        return_gates=True,
    )
    rows, targets, owner = [], [], []
    for index, (example, memory_only) in enumerate(zip(examples, state_only, strict=True)):
        context = [] if memory_only else example.last_turn
        for (question, answer), value in zip(example.pairs, example.values, strict=True):
            prompt = question_prompt(tokenizer, question, context)
            reply = answer_ids(tokenizer, answer)
            labels = reply if config.target == "answer" else value_labels(tokenizer, reply, value)
            rows.append(prompt + reply)
            targets.append([-100] * len(prompt) + labels)
            owner.append(index)
    state = written.state[torch.tensor(owner, device=device)]
    logits = model(pad(rows, 0, device), state, write=False).logits  # right padding: causal, never read
    labels = pad(targets, -100, device)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    if written.gates:
        weights = real[..., None, None].float()  # [B, T, 1, 1]: real tokens only
        means = [(g * weights).sum() / (weights.sum() * g.shape[-2] * g.shape[-1]) for g in written.gates]
        gate_reg = (torch.stack(means).mean() - GATE_TARGET) ** 2
    else:
        gate_reg = loss.new_zeros(())
    return loss, gate_reg


def value_labels(tokenizer, reply: list[int], value: str) -> list[int]:
    """`reply` with every token outside the gold value's tokens set to -100 (ignored by the loss)."""
    for text in (" " + value, value):  # after a space (mid-sentence), else as written
        pieces = tokenizer.encode(text, add_special_tokens=False)
        for start in range(len(reply) - len(pieces) + 1):
            if reply[start : start + len(pieces)] == pieces:
                return [-100] * start + pieces + [-100] * (len(reply) - start - len(pieces))
    raise ValueError(f"the answer {tokenizer.decode(reply)!r} does not contain its value {value!r} as whole tokens")


def save_checkpoint(out_dir: Path, model: MemoryModel, optimizer, step: int, config: TrainConfig, log: list) -> None:
    """The adapter in the reference format plus what resuming needs, replaced as a whole (never half-written)."""
    staging = out_dir.with_name(out_dir.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    save_adapter(staging, model.config, list(model.adapters))
    torch.save(
        {
            "step": step,
            "config": asdict(config),
            "optimizer": optimizer.state_dict(),
            "adapter_fp32": {k: v.detach().clone() for k, v in model.adapters.state_dict().items()},
            "log": log,
            "rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
        },
        staging / TRAINER_STATE,
    )
    (staging / "training_log.json").write_text(json.dumps({"config": asdict(config), "log": log}, indent=1) + "\n")
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def train(model: MemoryModel, tokenizer, out_dir: Path, config: TrainConfig, resume: bool = False, progress=None):
    """Train `model`'s adapter in place; returns the loss log [{step, loss, gate_reg, lr}]. With `resume`, goes
    on from the checkpoint in `out_dir` (same config required)."""
    out_dir = Path(out_dir)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start, log = 0, []
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if resume and (out_dir / TRAINER_STATE).exists():
        saved = torch.load(out_dir / TRAINER_STATE, weights_only=False)
        if saved["config"] != asdict(config):
            raise ValueError(f"{out_dir} was trained with another config: {saved['config']}; pass the same settings")
        model.adapters.load_state_dict(saved["adapter_fp32"])
        optimizer.load_state_dict(saved["optimizer"])
        start, log = saved["step"], saved["log"]
        random.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
    examples = synthetic_examples(tokenizer, config.examples, config.data_seed)
    with_replies = config.focus_history == "turns"
    focused = (
        focused_examples(tokenizer, config.examples, config.data_seed, with_replies) if config.focus_fraction else []
    )
    model.train()
    for step in range(start, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, config)
        optimizer.zero_grad(set_to_none=True)
        batch = [
            focused[random.randrange(len(focused))]
            if focused and random.random() < config.focus_fraction
            else examples[random.randrange(len(examples))]
            for _ in range(config.batch_size)
        ]
        state_only = [random.random() < config.state_only_fraction for _ in batch]
        loss, gate_reg = batch_loss(model, tokenizer, batch, state_only, config)
        (loss + config.gate_weight * gate_reg).backward()
        total, reg_total = loss.item(), gate_reg.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        log.append(
            {"step": step + 1, "loss": round(total, 5), "gate_reg": reg_total, "lr": optimizer.param_groups[0]["lr"]}
        )
        if progress is not None:
            progress(step + 1, config.steps, total)
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            save_checkpoint(out_dir, model, optimizer, step + 1, config, log)
    model.eval()
    return log
