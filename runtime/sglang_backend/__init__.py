"""δ-mem on SGLang: an external model package (`SGLANG_EXTERNAL_MODEL_PACKAGE=deltamem.runtime.sglang_backend`)
whose EntryClass wraps SGLang's Llama and Qwen3 models with δ-mem corrections, and an engine on `sglang.Engine`
with the interface of our BatchEngine. See docs/sglang.md for what has been run where.

SGLang imports every module of this package when it scans it for EntryClass, so modules here import nothing
heavy at import time except models.py, which needs SGLang anyway.
"""

PACKAGE = __name__
