"""The one place the SGLang backend touches the environment: a handoff across a process boundary, and the one
exception to "only the server's configuration (service/config.py) reads the environment".

SGLang builds our model classes itself, in its scheduler subprocess, with its own constructor arguments; the only
channel from our engine to that code is the environment the subprocess inherits. So the engine `announce`s what
the model process needs before it starts SGLang, and the model reads it back here:
- SGLANG_EXTERNAL_MODEL_PACKAGE: SGLang's own variable naming this package (its registry scans it for EntryClass);
- DELTAMEM_ADAPTER_DIR: the adapter the model loads;
- DELTAMEM_SGLANG_MAILBOX: the shared-memory mailbox (mailbox.py) the two processes exchange states through.
These are not server options: only the engine sets them.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ENV_VAR = "SGLANG_EXTERNAL_MODEL_PACKAGE"
ADAPTER_ENV_VAR = "DELTAMEM_ADAPTER_DIR"
MAILBOX_ENV_VAR = "DELTAMEM_SGLANG_MAILBOX"


def announce(package: str, adapter_dir: Path, mailbox: str) -> None:
    """The engine's side, before SGLang starts its subprocesses: what they inherit."""
    os.environ[PACKAGE_ENV_VAR] = package
    os.environ[ADAPTER_ENV_VAR] = str(adapter_dir)
    os.environ[MAILBOX_ENV_VAR] = mailbox


def adapter_dir() -> Path | None:
    """The model process's side: the adapter directory the engine announced, if any."""
    value = os.environ.get(ADAPTER_ENV_VAR)
    return Path(value) if value else None


def mailbox() -> str | None:
    """The model process's side: the mailbox the engine announced (Mailbox.env_value), if any."""
    return os.environ.get(MAILBOX_ENV_VAR) or None
