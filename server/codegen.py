"""Generates `lmrec.server.v1` from `protos/` and guards the v1 contract.

    python -m lmrec.server.codegen                    # regenerate server/v1 from protos/
    python -m lmrec.server.codegen --check            # fail on drift or a breaking change
    python -m lmrec.server.codegen --release-descriptor   # record protos/ as the released v1

protoc writes `from lmrec.v1 import recommender_pb2`, which would resolve against the `lmrec`
package itself; the generated modules are flattened into `lmrec.server.v1` and that import is
rewritten to a relative one. Output depends only on the .proto files and the grpcio-tools
version (pinned in the `dev` extra and recorded in `v1/__init__.py`), so a rerun reproduces the
committed files byte for byte (tests/server/test_contract.py checks it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"
GEN_DIR = Path(__file__).resolve().parent / "v1"
RELEASED_DESCRIPTOR = PROTO_ROOT / "lmrec" / "v1" / "descriptor.binpb"
PACKAGE_DIR = Path("lmrec") / "v1"

_INIT = '''"""Generated from protos/lmrec/v1 by `python -m lmrec.server.codegen`. DO NOT EDIT."""

GRPCIO_TOOLS_VERSION = "{version}"
'''


def _grpc_tools() -> tuple[Any, Any]:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - depends on the environment
        from lmrec import MissingDependencyError

        raise MissingDependencyError(
            "code generation needs grpcio-tools: pip install 'lmrec[dev]'"
        ) from e
    return grpc_tools, protoc


def grpcio_tools_version() -> str:
    from importlib.metadata import version

    return version("grpcio-tools")


def proto_files(proto_root: Path = PROTO_ROOT) -> list[str]:
    """The contract's .proto files, relative to `proto_root`, in a stable order."""
    files = sorted(p.relative_to(proto_root).as_posix() for p in (proto_root / PACKAGE_DIR).glob("*.proto"))
    if not files:
        raise FileNotFoundError(f"no .proto files under {proto_root / PACKAGE_DIR}")
    return files


def _protoc(args: list[str], proto_root: Path) -> None:
    grpc_tools, protoc = _grpc_tools()
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    argv = ["protoc", f"-I{proto_root}", f"-I{include}", *args, *proto_files(proto_root)]
    # protoc resolves the relative proto names against -I, whatever the working directory.
    if protoc.main(argv) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(argv)}")


def _rewrite(text: str) -> str:
    return re.sub(r"^from lmrec\.v1 import ", "from . import ", text, flags=re.MULTILINE)


def generate(out_dir: Path = GEN_DIR, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Writes the Python modules for `proto_root` into `out_dir` (a package); returns the files."""
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"], proto_root)
        produced = sorted((Path(tmp) / PACKAGE_DIR).iterdir())
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in produced:
            dst = out_dir / src.name
            dst.write_text(_rewrite(src.read_text()))
            written.append(dst)
    init = out_dir / "__init__.py"
    init.write_text(_INIT.format(version=grpcio_tools_version()))
    return [init, *written]


def descriptor_set(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """The compiled contract (with its imports), as protoc sees it now."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        _protoc([f"--descriptor_set_out={out}", "--include_imports"], proto_root)
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _messages(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    def walk(prefix: str, messages: Any) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
        for m in messages:
            name = f"{prefix}.{m.name}"
            yield name, m
            yield from walk(name, m.nested_type)

    yield from walk(file.package, file.message_type)


def _enums(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, descriptor_pb2.EnumDescriptorProto]]:
    for e in file.enum_type:
        yield f"{file.package}.{e.name}", e
    for name, m in _messages(file):
        for e in m.enum_type:
            yield f"{name}.{e.name}", e


def _field_shape(m: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto) -> dict:
    oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") and not f.proto3_optional else ""
    return {
        "name": f.name,
        "type": descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
        "type_name": f.type_name,
        "label": descriptor_pb2.FieldDescriptorProto.Label.Name(f.label),
        "explicit presence": f.proto3_optional,
        "oneof": oneof,
    }


def breaking_changes(
    old: descriptor_pb2.FileDescriptorSet, new: descriptor_pb2.FileDescriptorSet, package_prefix: str = "lmrec."
) -> list[str]:
    """What in `new` breaks clients built against `old`: each problem as one sentence.

    Breaking: a removed file, message, enum value, service or method; a field removed,
    renumbered, renamed, retyped, made repeated/singular, given or stripped of presence, or moved
    into or out of a oneof; a method with other request/response types or streaming; a changed
    package or file option (generated code for Go/Java moves). Additions are never breaking.
    """
    problems: list[str] = []
    new_files = {f.name: f for f in new.file}
    for of in old.file:
        if not of.package.startswith(package_prefix):
            continue
        nf = new_files.get(of.name)
        if nf is None:
            problems.append(f"file {of.name} removed")
            continue
        if nf.package != of.package:
            problems.append(f"file {of.name}: package {of.package} changed to {nf.package}")
        if nf.options != of.options:
            problems.append(f"file {of.name}: file options changed ({of.options} -> {nf.options})")
        new_messages = dict(_messages(nf))
        for name, om in _messages(of):
            nm = new_messages.get(name)
            if nm is None:
                problems.append(f"message {name} removed")
                continue
            new_fields = {f.number: f for f in nm.field}
            for field in om.field:
                nfield = new_fields.get(field.number)
                if nfield is None:
                    problems.append(f"{name}: field {field.name} = {field.number} removed or renumbered")
                    continue
                before, after = _field_shape(om, field), _field_shape(nm, nfield)
                for key in before:
                    if before[key] != after[key]:
                        problems.append(
                            f"{name}: field {field.number} ({field.name}) {key} changed "
                            f"from {before[key]!r} to {after[key]!r}"
                        )
        new_enums = dict(_enums(nf))
        for name, oe in _enums(of):
            ne = new_enums.get(name)
            if ne is None:
                problems.append(f"enum {name} removed")
                continue
            values = {v.number: v.name for v in ne.value}
            for v in oe.value:
                if values.get(v.number) != v.name:
                    problems.append(f"enum {name}: value {v.name} = {v.number} removed or renumbered")
        new_services = {s.name: s for s in nf.service}
        for os_ in of.service:
            ns = new_services.get(os_.name)
            if ns is None:
                problems.append(f"service {of.package}.{os_.name} removed")
                continue
            methods = {m.name: m for m in ns.method}
            for old_method in os_.method:
                new_method = methods.get(old_method.name)
                where = f"{of.package}.{os_.name}/{old_method.name}"
                if new_method is None:
                    problems.append(f"method {where} removed")
                    continue
                for key in ("input_type", "output_type", "client_streaming", "server_streaming"):
                    was, now = getattr(old_method, key), getattr(new_method, key)
                    if was != now:
                        problems.append(f"method {where}: {key} changed from {was!r} to {now!r}")
    return problems


def drift(gen_dir: Path = GEN_DIR, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Files under `gen_dir` that differ from a fresh generation (empty when in sync)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in generate(Path(tmp), proto_root)}
    committed = {p.name: p.read_bytes() for p in Path(gen_dir).iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}
    return sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmrec.server.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GEN_DIR, help="package folder to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only check for drift and breaking changes")
    parser.add_argument("--release-descriptor", action="store_true",
                        help=f"write the current contract to {RELEASED_DESCRIPTOR.relative_to(PROTO_ROOT.parent)}")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift(args.out)
        breaking = breaking_changes(
            descriptor_pb2.FileDescriptorSet.FromString(RELEASED_DESCRIPTOR.read_bytes()), descriptor_set()
        )
        for name in stale:
            print(f"drift: {args.out / name} differs from protos/ (run python -m lmrec.server.codegen)")
        for problem in breaking:
            print(f"breaking: {problem}")
        return 1 if stale or breaking else 0
    if args.release_descriptor:
        RELEASED_DESCRIPTOR.write_bytes(descriptor_set().SerializeToString(deterministic=True))
        print(f"wrote {RELEASED_DESCRIPTOR}")
        return 0
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
