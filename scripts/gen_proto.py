"""Generate the Python protobuf/gRPC code for proto/deltamem/v1 into clients/python (or another folder); run as
a script it also regenerates the TypeScript client's code (scripts/gen_ts_client.py) and docs/api-reference.md
(scripts/gen_api_reference.py).

The one command that produces generated code: `make proto`. tests/test_proto.py runs it into a temporary folder
and fails if the committed files differ, so generated code can never go stale.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "clients" / "python"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("deltamem/**/*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto file; return the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(files("grpc_tools") / "_proto")
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for source in sources:
        stem = out_dir / source.removesuffix(".proto")
        written += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]
    # package markers so the generated modules import as deltamem.v1.* (deltamem stays a namespace package)
    for package in {p.parent for p in written}:
        marker = package / "__init__.py"
        marker.write_text('"""Generated from proto/ by scripts/gen_proto.py. Do not edit."""\n')
        written.append(marker)
    return sorted(set(written))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--python-only", action="store_true", help="skip the TypeScript code and the API reference")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path, file=sys.stderr)
    if args.python_only:
        return
    # siblings in scripts/, importable because running this file puts its folder first on sys.path
    import gen_api_reference
    import gen_ts_client

    print(gen_api_reference.generate(), file=sys.stderr)
    try:
        for path in gen_ts_client.generate():
            print(path, file=sys.stderr)
    except gen_ts_client.MissingTool as missing:
        raise SystemExit(f"the TypeScript client was NOT regenerated: {missing}") from None


if __name__ == "__main__":
    main()
