"""`lmrec bundle verify|pack|unpack|manifest`: check, ship and open bundles (directories or .tar.zst)."""

from __future__ import annotations

import argparse
import sys

from .._bundle import read_manifest, verify_bundle
from .._manifest import Manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="inspect, pack and unpack bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    v = bsub.add_parser("verify", help="check every file of a bundle (directory or .tar.zst) against its manifest",
                        description="Prints OK and a summary, or each problem (exit status 1).")
    v.add_argument("dir", metavar="BUNDLE", help="bundle directory or packed bundle (.tar.zst)")
    v.set_defaults(run=run_verify)

    pk = bsub.add_parser(
        "pack",
        help="one checksummed .tar.zst to ship (needs the pack extra)",
        description="Writes a zstd-compressed tar whose first member is the manifest. With "
        "--precision int8/fp16/fp32 the archive carries only that encoder (an edge bundle).",
    )
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


def _summary(path: str, manifest: Manifest) -> None:
    data = manifest.data
    print(f"OK {path}: {len(manifest.files)} files verified")
    print(f"  format {manifest.format_version}, base model {manifest.base_model}, "
          f"dim {manifest.dim}, max length {manifest.max_length}")
    training = manifest.training
    trained = (f"split {training.get('split')}, seed {training.get('seed')}, {training.get('seconds', '?')} s, "
               f"encoder: {training.get('encoder', 'base')}") if training else "none (zero-shot)"
    print(f"  data {data.spec} ({data.items} items), training: {trained}")
    if manifest.user_model is not None:
        um, bonus = manifest.user_model, manifest.new_items.bonus if manifest.new_items else 0.0
        print(f"  serving: last {um.recent_items} items weigh {um.recent_weight:g}, new-item bonus {bonus:g}, "
              f"text term β {um.text_weight:g} (last {um.text_items} item(s))"
              + (f", centred on new items C {um.centred_text_weight:g}" if um.centred_text_weight else ""))
        pieces = ((training or {}).get("new_items") or {}).get("validation")
        if pieces and pieces.get("warm_share") is not None:  # absent from bundles trained before it was recorded
            print(f"  on validation, new-item settings keep {pieces['warm_share']:.1%} of warm targets' NDCG@10 and "
                  f"rank new targets at {pieces['served']['new']:.4f} ({pieces['without']['new']:.4f} without them)")
    if manifest.packed:
        print(f"  packed for precision {manifest.packed['precision']} "
              f"(dropped: {', '.join(manifest.packed['dropped']) or 'nothing'})")
    for precision, gate in manifest.gates.items():
        figures = ", ".join(f"{k} {v:.5f}" for k, v in gate.figures.items())
        print(f"  parity {precision}: {'passed' if gate.passed else 'FAILED'} ({figures})")


def run_verify(args: argparse.Namespace) -> int:
    from .._pack import is_archive, read_packed_manifest, verify_archive

    archive = is_archive(args.dir)
    problems = verify_archive(args.dir) if archive else verify_bundle(args.dir)
    if problems:
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        return 1
    _summary(args.dir, read_packed_manifest(args.dir) if archive else read_manifest(args.dir)[0])
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
    from .._pack import is_archive, read_packed_manifest

    manifest = read_packed_manifest(args.dir) if is_archive(args.dir) else read_manifest(args.dir)[0]
    print(manifest.dumps(), end="")
    return 0
