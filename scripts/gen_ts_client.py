"""Generate the TypeScript code for proto/deltamem/v1 into clients/typescript/src/gen (or under another folder).

`buf generate` with clients/typescript/buf.gen.yaml runs the protoc-gen-es plugin that `npm ci` installed in
clients/typescript/node_modules (buf's remote plugins need internet, which our machines lack). Called by
scripts/gen_proto.py (`make proto`); tests/clients/test_typescript_generated.py runs it into a temporary folder
and fails if the committed code differs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
GENERATED = Path("src") / "gen"
PLUGIN = PACKAGE / "node_modules" / ".bin" / "protoc-gen-es"


class MissingTool(RuntimeError):
    """buf, node or the npm-installed plugin is not there: say what to install."""


def buf_binary() -> str:
    """buf from the virtual environment running this script (pip's buf-bin), else from PATH."""
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if found is None:
        raise MissingTool("buf is not installed (pip install buf-bin)")
    return found


def generate(out_root: Path = PACKAGE) -> list[Path]:
    """Write the generated .ts files under out_root/src/gen; return their paths."""
    if shutil.which("node") is None:
        raise MissingTool("node is not installed (the protoc-gen-es plugin runs on Node.js)")
    if not PLUGIN.exists():
        raise MissingTool(f"{PLUGIN.relative_to(ROOT)} is missing: run `make ts-client` (npm ci)")
    result = subprocess.run(
        [buf_binary(), "generate", "--output", str(out_root)], cwd=PACKAGE, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"buf generate failed:\n{result.stdout}{result.stderr}")
    return sorted(p for p in (out_root / GENERATED).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-root", type=Path, default=PACKAGE, help="folder that receives src/gen")
    for path in generate(parser.parse_args().out_root.resolve()):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
