"""The installed layout: everything lives under `deltamem.*`; the client distribution stays light."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["kernels", "service", "clients", "runtime"])
def test_no_top_level_module_is_installed(name):
    # tests run with --import-mode=importlib through the pytest script: sys.path holds only what is installed
    spec = importlib.util.find_spec(name)
    assert spec is None, f"{name} resolves to {spec.origin}"


@pytest.mark.parametrize(
    "package,folder",
    [
        ("deltamem.kernels", "kernels"),
        ("deltamem.runtime", "runtime"),
        ("deltamem.service", "service"),
        ("deltamem.client", "clients/python/deltamem/client"),
    ],
)
def test_packages_map_to_the_top_level_folders(package, folder):
    spec = importlib.util.find_spec(package)
    assert Path(spec.origin).resolve().parent == (ROOT / folder).resolve()


def test_client_distribution_depends_only_on_grpcio_and_protobuf():
    requirements = importlib.metadata.requires("deltamem-client")
    names = {r.split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}
    assert names == {"grpcio", "protobuf"}
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["deltamem"] == "deltamem.client.cli:main"
    assert scripts["deltamem-server"] == "deltamem.service.cli:main"
