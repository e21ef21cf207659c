"""`lmrec bundle verify|pack|unpack|manifest`: check, ship and open bundles (directories or .tar.zst)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .._bundle import MANIFEST, verify_bundle


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="inspect, pack and unpack bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    v = bsub.add_parser("verify", help="check every file of a bundle (directory or .tar.zst) against its manifest",
                        description="Prints OK and a summary, or each problem (exit status 1).")
    v.add_argument("dir", metavar="BUNDLE", help="bundle directory or packed bundle (.tar.zst)")
    v.set_defaults(run=run_verify)

    pk = bsub.add_parser("pack", help="one checksummed .tar.zst to ship (needs the pack extra)",
                         description="Writes a zstd-compressed tar whose first member is the manifest. With "
                                     "--precision int8/fp16/fp32 the archive carries only that encoder (an edge bundle).")
    pk.add_argument("dir", metavar="DIR", help="bundle directory")
    pk.add_argument("out", metavar="OUT.tar.zst", help="archive to write")
    pk.add_argument("--precision", default="all", choices=("all", "int8", "fp16", "fp32"),
                    help="encoder(s) to carry (default: all; int8 for CPU edge, fp16 for GPU)")
    pk.add_argument("--level", type=int, default=6, help="zstd level 1-22 (default: %(default)s)")
    pk.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    pk.set_defaults(run=run_pack)

    up = bsub.add_parser("unpack", help="unpack a .tar.zst into a new bundle directory, checking every file",
                         description="Nothing appears at OUT_DIR unless every file matches the manifest.")
    up.add_argument("archive", metavar="ARCHIVE", help="packed bundle (.tar.zst)")
    up.add_argument("out", metavar="OUT_DIR", help="bundle directory to create")
    up.add_argument("--overwrite", action="store_true", help="replace an existing bundle at OUT_DIR")
    up.set_defaults(run=run_unpack)

    m = bsub.add_parser("manifest", help="print a bundle's manifest (from a .tar.zst: its first member only)")
    m.add_argument("dir", metavar="BUNDLE", help="bundle directory or packed bundle (.tar.zst)")
    m.set_defaults(run=run_manifest)


def _summary(path: str, manifest: dict[str, Any]) -> None:
    data = manifest.get("data") or {}
    parity = manifest.get("parity") or {}
    print(f"OK {path}: {len(manifest['files'])} files verified")
    print(f"  format {manifest.get('format_version')}, base model {manifest.get('base_model')}, "
          f"dim {manifest.get('dim')}, max length {manifest.get('max_length')}")
    print(f"  data {data.get('spec')} ({data.get('items')} items), training {manifest.get('training') or 'none (zero-shot)'}")
    if manifest.get("packed"):
        print(f"  packed for precision {manifest['packed']['precision']} (dropped: {', '.join(manifest['packed']['dropped']) or 'nothing'})")
    if parity:
        print("  parity " + ", ".join(f"{k} {parity[k]:.5f}" for k in
                                      ("fp32_min_cosine", "int8_mean_cosine", "int8_top10_overlap") if k in parity))


def run_verify(args: argparse.Namespace) -> int:
    from .._pack import is_archive, read_packed_manifest, verify_archive

    archive = is_archive(args.dir)
    problems = verify_archive(args.dir) if archive else verify_bundle(args.dir)
    if problems:
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        return 1
    if archive:
        manifest = read_packed_manifest(args.dir)
    else:
        with open(f"{args.dir}/{MANIFEST}", encoding="utf-8") as f:
            manifest = json.load(f)
    _summary(args.dir, manifest)
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from .._errors import LmrecError
    from .._pack import pack_bundle

    try:
        report = pack_bundle(args.dir, args.out, precision=args.precision, level=args.level, overwrite=args.overwrite)
    except ValueError as e:
        raise LmrecError(str(e)) from None
    mib = 2**20
    parts = ", ".join(f"{k} {v / mib:.1f}" for k, v in report["components"].items() if v)
    print(f"{report['archive']}: {report['archive_bytes'] / mib:.1f} MiB ({report['files']} files, "
          f"{report['bundle_bytes'] / mib:.1f} MiB unpacked: {parts} MiB), precision {report['precision']}")
    return 0


def run_unpack(args: argparse.Namespace) -> int:
    from .._pack import unpack_bundle

    print(unpack_bundle(args.archive, args.out, overwrite=args.overwrite))
    return 0


def run_manifest(args: argparse.Namespace) -> int:
    from .._bundle import _read_manifest
    from .._pack import is_archive, read_packed_manifest

    manifest = read_packed_manifest(args.dir) if is_archive(args.dir) else _read_manifest(Path(args.dir))
    print(json.dumps(manifest, indent=2, ensure_ascii=False))
    return 0
