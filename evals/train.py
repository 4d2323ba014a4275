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
import logging
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from deltamem.evals.conversation import session_numbers
from deltamem.evals.fitted_init import fitted_init
from deltamem.evals.prompts import answer_ids, encode_chat, question_prompt
from deltamem.evals.synthetic import build, history_messages
from deltamem.runtime.model.checkpoint import save_adapter
from deltamem.runtime.model.memory_model import MemoryModel

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.pt"
GATE_TARGET = 0.05
FOCUS_HISTORIES = ("turns", "statement")
# "value": only the gold value's tokens inside the answer sentence carry loss. The sentence around it follows from
# the question alone, so with "answer" most of the loss teaches the answer's form and little of it needs memory.
TARGETS = ("answer", "value")
ADAPTER_INITS = ("reference", "copy", "fitted")  # fitted: evals/fitted_init.py
FIT_EXAMPLES = 200  # focused examples the fitted init is fitted on


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
    third_person_fraction: float = 0.5  # speaker A's facts asked by name (LoCoMo style) rather than "my"
    raw_text_fraction: float = 0.0  # focused facts of A written as bare text (as UpdateMemory with text writes)
    gate_weight: float = 0.01
    # weight of a balanced cross-entropy that asks every write gate to open on the tokens of stated values and to
    # stay shut elsewhere (0 = the reference: only the mean-gate regulariser). Values are known in the synthetic
    # data; the gates learn to recognise them from the hidden states, so serving needs no labels.
    gate_supervision: float = 0.0
    # weight of a contrastive term: each answer must be likelier with its own memory than with the next
    # example's, softplus(nll_own - nll_other). The answer's prior (what any memory of a city suggests) cancels
    # out of it, so its gradient is only the part that makes answers depend on what memory holds.
    contrast_weight: float = 0.0
    adapter_init: str = "reference"  # or "copy": read heads start as the transpose of the value projections
    examples: int = 2000  # synthetic training conversations
    data_seed: int = 0
    seed: int = 0
    max_history_tokens: int = 8192
    save_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.examples < 1 or self.save_every < 1:
            raise ValueError("steps, batch_size, examples and save_every must be >= 1")
        for name in ("state_only_fraction", "focus_fraction", "third_person_fraction", "raw_text_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.focus_history not in FOCUS_HISTORIES:
            raise ValueError(f"focus_history must be one of {FOCUS_HISTORIES}, got {self.focus_history!r}")
        if self.adapter_init not in ADAPTER_INITS:
            raise ValueError(f"adapter_init must be one of {ADAPTER_INITS}, got {self.adapter_init!r}")
        if self.gate_supervision < 0 or self.contrast_weight < 0:
            raise ValueError("gate_supervision and contrast_weight must be >= 0")
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
    value_mask: list[bool]  # per history token: part of a stated value (what gate supervision asks to write)


def as_example(tokenizer, messages: list[dict], pairs: list[tuple[str, str]], values: list[str]) -> Example:
    ids, owners = encode_chat(tokenizer, messages, add_generation_prompt=False)
    return Example(ids, owners, messages[-2:], pairs, values, value_token_mask(tokenizer, ids, values))


def value_token_mask(tokenizer, ids: list[int], values: list[str]) -> list[bool]:
    """True on every token of every occurrence of a value in `ids` (after a space or as written)."""
    mask = [False] * len(ids)
    for value in values:
        for text in (" " + value, value):
            pieces = tokenizer.encode(text, add_special_tokens=False)
            for start in range(len(ids) - len(pieces) + 1):
                if ids[start : start + len(pieces)] == pieces:
                    mask[start : start + len(pieces)] = [True] * len(pieces)
    return mask


def question_pair(item: dict, rng: random.Random, third_person_fraction: float) -> tuple[str, str]:
    """(question, sentence answer) of one synthetic QA item: speaker A's facts are asked in the first person
    (the user asking about themself) or, with probability `third_person_fraction`, LoCoMo-style about A by name;
    speaker B's facts only by name."""
    if "question_self" in item and rng.random() >= third_person_fraction:
        return item["question_self"], item["answer_sentence_self"]
    return item["question"], item["answer_sentence"]


def synthetic_examples(tokenizer, samples: list[dict], seed: int, third_person_fraction: float = 0.5) -> list[Example]:
    """Whole synthetic conversations, every question asked after the full history."""
    rng = random.Random(f"questions/{seed}")
    examples = []
    for sample in samples:
        pairs = [question_pair(item, rng, third_person_fraction) for item in sample["qa"]]
        values = [str(item["answer"]) for item in sample["qa"]]
        examples.append(as_example(tokenizer, history_messages(sample), pairs, values))
    return examples


def focused_examples(
    tokenizer,
    samples: list[dict],
    seed: int,
    with_replies: bool = True,
    third_person_fraction: float = 0.5,
    raw_text_fraction: float = 0.0,
) -> list[Example]:
    """Per question, a history of only the turns its evidence names (and, `with_replies`, the replies to them):
    one fact in memory. The easiest case; mixed in, it teaches the gates and values to store a fact before the
    keys must tell several facts apart. With probability `raw_text_fraction` a fact of speaker A is written as
    its bare text, no chat template, as `deltamem update SESSION "text"` (UpdateMemory with text) writes it."""
    rng = random.Random(f"focused/{seed}")
    examples = []
    for sample in samples:
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
            if history[0]["role"] != "user":  # a chat history starts with the user: B's fact follows A's question
                history.insert(0, messages[turn_ids.index(item["evidence"][0]) - 1])
            pair = question_pair(item, rng, third_person_fraction)
            value = str(item["answer"])
            if item["subject"] == "a" and rng.random() < raw_text_fraction:  # no name in it: asked as "my"
                pair = (item["question_self"], item["answer_sentence_self"])
                statement = messages[turn_ids.index(item["evidence"][0])]
                ids = tokenizer.encode(statement["content"], add_special_tokens=False)
                mask = value_token_mask(tokenizer, ids, [value])
                examples.append(Example(ids, [0] * len(ids), [statement], [pair], [value], mask))
            else:
                examples.append(as_example(tokenizer, history, [pair], [value]))
    return examples


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine to 0 (step counts from 0)."""
    warmup = max(1, round(config.steps * config.warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def copy_init(model: MemoryModel, gain: float) -> None:
    """Each layer's query memory projection tied to its key projection (a question reads what a statement in the
    same context wrote) and its output head set to `gain` times the L2-normalised transpose of its value
    projection, so that a read re-injects, in the residual stream, the direction of the hidden state that wrote."""
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.memory_q_proj.copy_(adapter.memory_k_proj)
            adapter.delta_o_proj.copy_(F.normalize(adapter.memory_v_proj.t(), dim=0) * gain)


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
    """(answer cross-entropy, weighted gate regularisers) for a batch: write each history (right-padded, padding masked
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
        logits_to_keep=1,  # the write pass's logits are never used: skip the vocabulary projection
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
    owners = torch.tensor(owner, device=device)
    state = written.state[owners]
    labels = pad(targets, -100, device)[:, 1:]  # the label of position t is token t + 1
    contrast = config.contrast_weight > 0 and len(examples) > 1
    if contrast:  # every row once more, reading the next example's memory
        state = torch.cat([state, written.state[(owners + 1) % len(examples)]])
        rows, labels = rows + rows, torch.cat([labels, labels])
    # the vocabulary projection only where some row has a label: right padding is causal and never read
    positions = (labels != -100).any(0).nonzero().flatten()
    logits = model(pad(rows, 0, device), state, write=False, logits_to_keep=positions).logits
    wanted = labels[:, positions]
    token_loss = F.cross_entropy(logits.transpose(1, 2), wanted.clamp(min=0), reduction="none") * (wanted != -100)
    if contrast:
        own, other = token_loss.sum(1).chunk(2)
        counted = (wanted != -100).sum(1).chunk(2)[0]
        loss = own.sum() / counted.sum() + config.contrast_weight * F.softplus(own - other).mean()
    else:
        loss = token_loss.sum() / (wanted != -100).sum()
    if written.gates:
        weights = real[..., None, None].float()  # [B, T, 1, 1]: real tokens only
        means = [(g * weights).sum() / (weights.sum() * g.shape[-2] * g.shape[-1]) for g in written.gates]
        gate_reg = config.gate_weight * (torch.stack(means).mean() - GATE_TARGET) ** 2
        if config.gate_supervision:
            masks = [example.value_mask[-config.max_history_tokens :] for example in examples]
            wanted = pad(masks, False, device).bool()
            gate_reg = gate_reg + config.gate_supervision * gate_supervision_loss(written.gates, wanted, real)
    else:
        gate_reg = loss.new_zeros(())
    return loss, gate_reg


def gate_supervision_loss(gates: list[torch.Tensor], wanted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Balanced binary cross-entropy of every layer's gates [B, T, N, r] against `wanted` [B, T] (True: open),
    over real tokens: the mean over value tokens plus the mean over the others."""
    beta = torch.stack(gates).clamp(1e-6, 1 - 1e-6)  # [L, B, T, N, r]
    target = wanted[None, :, :, None, None].float().expand_as(beta)
    loss = F.binary_cross_entropy(beta, target, reduction="none").mean((0, 3, 4))  # [B, T]
    on, off = wanted & real, ~wanted & real
    parts = [loss[m].mean() for m in (on, off) if m.any()]
    return torch.stack(parts).sum() if parts else loss.new_zeros(())


def value_labels(tokenizer, reply: list[int], value: str) -> list[int]:
    """`reply` with every token outside the gold value's tokens set to -100 (ignored by the loss)."""
    for text in (" " + value, value):  # after a space (mid-sentence), else as written
        pieces = tokenizer.encode(text, add_special_tokens=False)
        for start in range(len(reply) - len(pieces) + 1):
            if reply[start : start + len(pieces)] == pieces:
                return [-100] * start + pieces + [-100] * (len(reply) - start - len(pieces))
    # the value merged with what follows it ("H." + "." -> "H.."): label the tokens that overlap its characters
    ends = [len(tokenizer.decode(reply[: i + 1])) for i in range(len(reply))]
    start = tokenizer.decode(reply).find(value)
    if start < 0:
        raise ValueError(f"the answer {tokenizer.decode(reply)!r} does not contain its value {value!r}")
    begins = [0, *ends[:-1]]
    return [t if b < start + len(value) and e > start else -100 for t, b, e in zip(reply, begins, ends, strict=True)]


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
    samples = build("train", config.examples, config.data_seed)
    people = config.third_person_fraction
    examples = synthetic_examples(tokenizer, samples, config.data_seed, people)
    with_replies = config.focus_history == "turns"
    focused = (
        focused_examples(tokenizer, samples, config.data_seed, with_replies, people, config.raw_text_fraction)
        if config.focus_fraction or config.adapter_init == "fitted"
        else []
    )
    if start == 0 and config.adapter_init == "copy":
        copy_init(model, model.config.online_gain)
    if start == 0 and config.adapter_init == "fitted":
        logger.info("fitting the adapter's start to %d focused examples (about a minute)", FIT_EXAMPLES)
        fitted = fitted_init(model, random.Random(config.data_seed).sample(focused, min(FIT_EXAMPLES, len(focused))))
        logger.info("fitted init: %s", fitted)
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
        (loss + gate_reg).backward()
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
