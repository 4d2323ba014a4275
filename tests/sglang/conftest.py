"""Fixtures for the SGLang backend tests.

Most of these tests need no SGLang (the memory math, the slot pool, the mailbox, the adapter weight mapping) and
run in every venv. The ones that load SGLang skip, saying why, where `import sglang` fails: the project venv
does not install it (see requirements/sglang-light.txt for the CPU-only install that does).
"""

from __future__ import annotations

import pytest

# The light install carries torchvision's CUDA wheel next to a CPU torch (SGLang's config package imports
# torchvision.transforms). That wheel's C extension cannot load, and torchvision then registers fake kernels
# for two operators that were never defined; defining their schemas first lets `import torchvision` succeed.
# Only for a CUDA torchvision wheel beside a CPU torch: where the extension loads, it defines them itself.
TORCHVISION_SHIM = """
import importlib.util, pathlib, torch
_tv = importlib.util.find_spec("torchvision")
_cuda_wheel = _tv is not None and "+cu" in (pathlib.Path(_tv.origin).parent / "version.py").read_text()
if torch.version.cuda is None and _cuda_wheel:
    _deltamem_tv = torch.library.Library("torchvision", "DEF")
    for _op in ("nms", "qnms"):
        _deltamem_tv.define(_op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
"""
exec(TORCHVISION_SHIM)  # noqa: S102 - the snippet above, also handed to subprocesses


def _sglang_import_error() -> str | None:
    try:
        import sglang.srt.models.llama  # noqa: F401
        import sglang.srt.models.qwen3  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, and say which
        return f"{type(exc).__name__}: {exc}"
    return None


SGLANG_ERROR = _sglang_import_error()


@pytest.fixture(scope="session")
def sglang_models():
    """Skips unless SGLang's model code imports here."""
    if SGLANG_ERROR is not None:
        pytest.skip(f"sglang is not importable in this venv ({SGLANG_ERROR}); see requirements/sglang-light.txt")


@pytest.fixture(scope="session")
def torchvision_shim() -> str:
    return TORCHVISION_SHIM
