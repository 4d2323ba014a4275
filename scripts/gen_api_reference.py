"""Write docs/api-reference.md from the comments in proto/deltamem/v1: every service, RPC, message, field, enum and
value, with its type.

The proto comments are the one source of the API's documentation; this renders them so that they can be read
without opening the .proto file. Run by `make proto`; tests/test_api_reference.py fails when the committed file
is stale or when any element lacks a comment.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "docs" / "api-reference.md"

# field numbers inside descriptor.proto, as SourceCodeInfo paths use them
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE = 2
SERVICE_METHOD = 2

FieldType = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in FieldType.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


def descriptor_set(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """Compile the API's .proto files (not their imports) with comments kept."""
    sources = sorted(str(p.relative_to(proto_root)) for p in proto_root.glob("deltamem/**/*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.binpb"
        args = ["protoc", f"-I{proto_root}", f"-I{files('grpc_tools') / '_proto'}", "--include_source_info"]
        if protoc.main([*args, f"--descriptor_set_out={out}", *sources]) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


class Element(NamedTuple):
    """One documented thing: its kind, full name, the SourceCodeInfo path that locates it, and the descriptor."""

    kind: str
    name: str
    path: tuple[int, ...]
    proto: object


def elements(file: descriptor_pb2.FileDescriptorProto) -> list[Element]:
    """Every service, RPC, message, field, oneof, enum and enum value of a file, in declaration order."""
    found: list[Element] = []
    prefix = file.package

    def enum(e, name, path):
        found.append(Element("enum", name, path, e))
        for i, value in enumerate(e.value):
            found.append(Element("enum value", f"{name}.{value.name}", (*path, ENUM_VALUE, i), value))

    def message(m, name, path):
        if m.options.map_entry:
            return
        found.append(Element("message", name, path, m))
        for i, oneof in enumerate(m.oneof_decl):
            if not is_synthetic_oneof(m, i):
                found.append(Element("oneof", f"{name}.{oneof.name}", (*path, MESSAGE_ONEOF, i), oneof))
        for i, field in enumerate(m.field):
            found.append(Element("field", f"{name}.{field.name}", (*path, MESSAGE_FIELD, i), field))
        for i, nested in enumerate(m.nested_type):
            message(nested, f"{name}.{nested.name}", (*path, MESSAGE_NESTED, i))
        for i, nested in enumerate(m.enum_type):
            enum(nested, f"{name}.{nested.name}", (*path, MESSAGE_ENUM, i))

    for i, service in enumerate(file.service):
        found.append(Element("service", f"{prefix}.{service.name}", (FILE_SERVICE, i), service))
        for j, method in enumerate(service.method):
            path = (FILE_SERVICE, i, SERVICE_METHOD, j)
            found.append(Element("rpc", f"{prefix}.{service.name}.{method.name}", path, method))
    for i, m in enumerate(file.message_type):
        message(m, f"{prefix}.{m.name}", (FILE_MESSAGE, i))
    for i, e in enumerate(file.enum_type):
        enum(e, f"{prefix}.{e.name}", (FILE_ENUM, i))
    return found


def is_synthetic_oneof(message: descriptor_pb2.DescriptorProto, index: int) -> bool:
    """proto3 `optional` fields get a hidden oneof each; it is not something the author wrote or documents."""
    members = [f for f in message.field if f.HasField("oneof_index") and f.oneof_index == index]
    return len(members) == 1 and members[0].proto3_optional


def comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comment of every located element, as one line of text."""
    found = {}
    for location in file.source_code_info.location:
        text = " ".join(line.strip() for line in location.leading_comments.splitlines() if line.strip())
        if text:
            found[tuple(location.path)] = text
    return found


def undocumented(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """'kind name' of every element without a leading comment."""
    missing = []
    for file in fds.file:
        documented = comments(file)
        missing += [f"{e.kind} {e.name}" for e in elements(file) if e.path not in documented]
    return missing


# ---- rendering ---------------------------------------------------------------------------------------------
def anchor(name: str) -> str:
    return name.lower().replace(".", "")


def type_link(type_name: str, package: str) -> str:
    """A message or enum type, linked to its section when it is ours."""
    name = type_name.lstrip(".")
    if name.startswith(package + "."):
        short = name.removeprefix(package + ".")
        return f"[`{short}`](#{anchor(short)})"
    return f"`{name}`"


def field_type(field, message: descriptor_pb2.DescriptorProto, package: str) -> str:
    def plain(f) -> str:
        if f.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_ENUM):
            return type_link(f.type_name, package)
        return f"`{SCALARS[f.type]}`"

    if field.type == FieldType.TYPE_MESSAGE:
        entry = next((n for n in message.nested_type if field.type_name.endswith(f".{message.name}.{n.name}")), None)
        if entry is not None and entry.options.map_entry:
            key, value = entry.field
            if value.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_ENUM):
                return f"`map<{SCALARS[key.type]}, `{plain(value)}`>`"
            return f"`map<{SCALARS[key.type]}, {SCALARS[value.type]}>`"
    if field.label == FieldType.LABEL_REPEATED:
        return f"repeated {plain(field)}"
    if field.proto3_optional:
        return f"optional {plain(field)}"
    return plain(field)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(fds: descriptor_pb2.FileDescriptorSet) -> str:
    out = [
        "# deltamem.v1 API reference",
        "",
        "Generated from the comments in `proto/deltamem/v1` by `scripts/gen_api_reference.py` (`make proto`); do not",
        "edit by hand. [api.md](api.md) explains errors, limits and semantics; this page lists every element.",
        "",
    ]
    for file in fds.file:
        package, documented = file.package, comments(file)
        by_kind: dict[str, list[Element]] = {}
        for element in elements(file):
            by_kind.setdefault(element.kind, []).append(element)
        out += [f"Source: `{file.name}`, package `{package}`.", ""]

        out += ["## Services", ""]
        for service in by_kind.get("service", []):
            short = service.name.removeprefix(package + ".")
            out += [f"### {short}", "", documented[service.path], "", "| RPC | request | response | description |"]
            out += ["|---|---|---|---|"]
            for rpc in (r for r in by_kind.get("rpc", []) if r.path[:2] == service.path):
                m = rpc.proto
                response = ("stream " if m.server_streaming else "") + type_link(m.output_type, package)
                request = ("stream " if m.client_streaming else "") + type_link(m.input_type, package)
                out.append(f"| `{m.name}` | {request} | {response} | {cell(documented[rpc.path])} |")
            out.append("")

        out += ["## Messages", ""]
        for message in by_kind.get("message", []):
            m, short = message.proto, message.name.removeprefix(package + ".")
            out += [f"### {short}", "", documented[message.path], ""]
            fields = [f for f in by_kind.get("field", []) if f.path[:-2] == message.path]
            if not fields:
                out += ["No fields.", ""]
                continue
            out += ["| field | number | type | description |", "|---|---|---|---|"]
            for field in fields:
                f = field.proto
                note = ""
                if f.HasField("oneof_index") and not f.proto3_optional:
                    oneof = m.oneof_decl[f.oneof_index].name
                    note = f"One of `{oneof}`. "
                out.append(
                    f"| `{f.name}` | {f.number} | {field_type(f, m, package)} | {note}{cell(documented[field.path])} |"
                )
            for oneof in (o for o in by_kind.get("oneof", []) if o.path[:-2] == message.path):
                out += ["", f"Oneof `{oneof.proto.name}`: {documented[oneof.path]}"]
            out.append("")

        out += ["## Enums", ""]
        for enum in by_kind.get("enum", []):
            short = enum.name.removeprefix(package + ".")
            out += [f"### {short}", "", documented[enum.path], "", "| value | number | description |", "|---|---|---|"]
            for value in (v for v in by_kind.get("enum value", []) if v.path[:-2] == enum.path):
                out.append(f"| `{value.proto.name}` | {value.proto.number} | {cell(documented[value.path])} |")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def generate(out: Path = DEFAULT_OUT, proto_root: Path = PROTO_ROOT) -> Path:
    """Write the reference; refuse (SystemExit) while any element is undocumented."""
    fds = descriptor_set(proto_root)
    missing = undocumented(fds)
    if missing:
        raise SystemExit("undocumented in the proto (add a comment): " + ", ".join(missing))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(fds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(generate(parser.parse_args().out), file=sys.stderr)


if __name__ == "__main__":
    main()
