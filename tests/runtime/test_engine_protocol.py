"""The one engine interface (engine/protocol.py): the batching engine, its sequential twin and the SGLang engine
each implement all of it, with its signatures, and inherit from nothing (a twin is a twin, not a base class)."""

from __future__ import annotations

import ast
import inspect

import pytest

from deltamem.runtime.engine.batch_engine import BatchEngine
from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.engine.sequential import SequentialEngine
from deltamem.runtime.sglang_backend.engine import SGLangEngine

ENGINES = [BatchEngine, SequentialEngine, SGLangEngine]
METHODS = ["empty_state", "write", "generate", "encode_context", "close"]
DATA = [
    "inputs",
    "backbone_fingerprint",
    "adapter_fingerprint",
    "keeps_context",
    "max_batch",
    "slots_in_use",
    "state_bound",
]


def required_parameters(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.default is inspect.Parameter.empty]


def test_the_protocol_is_what_these_tests_check():
    members = {name for name in vars(Engine) if not name.startswith("_")} | set(Engine.__annotations__)
    assert members == set(METHODS) | set(DATA)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_each_engine_inherits_nothing_and_has_every_method_with_its_signature(engine):
    assert engine.__mro__ == (engine, object)
    for name in METHODS:
        assert required_parameters(getattr(engine, name)) == required_parameters(getattr(Engine, name)), name


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_each_engine_sets_every_attribute(engine):
    """Class attributes or properties, or assignments in __init__ (the SGLang engine cannot start without a GPU)."""
    init = ast.parse(inspect.getsource(engine))
    assigned = {
        target.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
    }
    missing = [name for name in DATA if name not in vars(engine) and name not in assigned]
    assert missing == []


def test_the_in_process_engines_are_engines_at_run_time(default_model_dir):
    from deltamem.runtime.model.backbone import load_model

    loaded = load_model(default_model_dir)
    batch = BatchEngine(loaded, max_batch=2)
    try:
        assert isinstance(batch, Engine) and isinstance(SequentialEngine(loaded), Engine)
        assert batch.keeps_context and not SequentialEngine(loaded).keeps_context
    finally:
        batch.close()
