"""Pack a staging folder into checksummed pieces, and put them back together (stdlib only).

Used on both machines: `prepare.sh` packs here (`pack`), `run.sh` stashes and unpacks on the
GPU machine (`stash`, `unpack`). The payload is one deterministic tar (sorted members, zeroed
owners and times) compressed as one xz stream (LZMA2, 128 MiB dictionary: the fp16 word
embeddings appear in the model's safetensors and again in the fp16 ONNX graph, and a window that
spans both stores them once), cut into as few pieces of at most `piece_bytes` as it takes, all of
about the same size. `INDEX.json` beside the pieces names each piece with its size, sha256 and
byte range, lists what the payload holds, and says how to reassemble it by hand.

xz rather than zstd: Python's `lzma` opens it on the GPU machine, so no binary (and none of the
libraries it links) has to travel. Size is a wash: on 60 MB of the CUDA provider library
`zstd -19 --long=27` gave 58.82 MB and xz -9 58.97 MB; on compressible parts xz was ~10 % smaller.

    python3 pieces.py pack STAGE OUTDIR [--piece-bytes N] [--preset 9] [--meta FILE]
    python3 pieces.py resplit OUTDIR [--piece-bytes N]   # cut the same payload again, no recompression
    python3 pieces.py stash OUTDIR ROOT      # exit 0: all pieces stashed; 3: some missing (one line says which)
    python3 pieces.py unpack ROOT DEST       # checks every sha256, extracts the payload into DEST
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import lzma
import os
import shutil
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

INDEX = "INDEX.json"
FORMAT = "lmrec-gpu-pieces/1"
PAYLOAD = "payload.tar.xz"
MIB = 1 << 20
DEFAULT_PIECE_BYTES = 57 * MIB  # at most: a device call carries 64 MiB, the repository (~2 MiB) included
HARD_LIMIT = 64 * MIB
DICT_BYTES = 128 * MIB
_BLOCK = 4 * MIB


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            h.update(chunk)
    return h.hexdigest()


# -- packing (development machine) ----------------------------------------------------------------
def _members(stage: Path, order: Iterable[str] = ()) -> list[Path]:
    """Every file under `stage`, grouped by the top-level names in `order` first (in that order),
    then the rest sorted; sorted within each group."""
    files = sorted(p for p in stage.rglob("*") if p.is_file() and not p.is_symlink())
    rank = {name: i for i, name in enumerate(order)}

    def key(p: Path) -> tuple[int, str]:
        top = p.relative_to(stage).parts[0]
        return (rank.get(top, len(rank)), p.relative_to(stage).as_posix())

    return sorted(files, key=key)


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o755 if mode & 0o111 else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what goes through it."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.f, self.hash, self.bytes = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self.f.write(view)
        self.hash.update(view)
        self.bytes += len(view)
        return len(view)


def _cut(payload: Path, outdir: Path, max_bytes: int) -> list[dict[str, Any]]:
    """Cut `payload` into as few pieces of at most `max_bytes` as possible, all of about the same
    size (5 x 55.5 MiB rather than 5 x 57 MiB + 2 MiB): part0, part1, … in `outdir`."""
    if not 1 <= max_bytes <= HARD_LIMIT:
        raise ValueError(f"piece size {max_bytes}: must be 1 to {HARD_LIMIT} (64 MiB travel per device call)")
    for old in outdir.glob("part[0-9]*"):
        old.unlink()
    total = payload.stat().st_size
    count = max(1, -(-total // max_bytes))
    size = -(-total // count)
    pieces = []
    with open(payload, "rb") as f:
        for i in range(count):
            name, h, n = f"part{i}", hashlib.sha256(), 0
            with open(outdir / name, "wb") as out:
                while n < size and (chunk := f.read(min(_BLOCK, size - n))):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
            pieces.append({"name": name, "offset": i * size, "bytes": n, "sha256": h.hexdigest(),
                           "holds": f"bytes {i * size}..{i * size + n - 1} of {PAYLOAD} (of {total})"})
    return pieces


def _write_index(outdir: Path, index: dict[str, Any]) -> None:
    names = [p["name"] for p in index["pieces"]]
    index["reassemble"] = (
        f"cat {' '.join(names)} > {PAYLOAD} && sha256sum {PAYLOAD} (must equal payload.sha256) && "
        f"mkdir payload && xz -dc {PAYLOAD} | tar x -C payload  (or Python: tarfile.open('{PAYLOAD}', 'r:xz')"
        ".extractall('payload')); run.sh does this itself, checking every file's sha256 too")
    tmp = outdir / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    tmp.replace(outdir / INDEX)


def pack(stage: str | os.PathLike[str], outdir: str | os.PathLike[str], piece_bytes: int = DEFAULT_PIECE_BYTES,
         preset: int = 9, order: Iterable[str] = (), meta: dict[str, Any] | None = None,
         descriptions: dict[str, str] | None = None) -> dict[str, Any]:
    """Tar + xz everything under `stage` into pieces of at most `piece_bytes` in `outdir` and write
    `outdir/INDEX.json`. Old pieces and the old index in `outdir` are removed first. Returns the index."""
    stage, outdir = Path(stage), Path(outdir)
    if not 1 <= piece_bytes <= HARD_LIMIT:
        raise ValueError(f"piece_bytes {piece_bytes}: must be 1 to {HARD_LIMIT} (64 MiB travel per device call)")
    if not stage.is_dir():
        raise ValueError(f"stage {stage}: not a directory")
    outdir.mkdir(parents=True, exist_ok=True)
    for old in list(outdir.glob("part[0-9]*")) + [outdir / INDEX]:
        if old.is_file():
            old.unlink()
    members = _members(stage, order)
    contents = []
    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": DICT_BYTES}]
    payload = outdir / (PAYLOAD + ".tmp")
    with open(payload, "wb") as raw:
        hashing = _Hashing(raw)
        with lzma.LZMAFile(hashing, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=filters) as xz:
            with tarfile.open(fileobj=xz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in members:
                    rel = path.relative_to(stage).as_posix()
                    st = path.stat()
                    with open(path, "rb") as f:
                        tar.addfile(_tarinfo(rel, st.st_size, st.st_mode), f)
                    contents.append({"path": rel, "bytes": st.st_size, "sha256": sha256_file(path)})
    try:
        pieces = _cut(payload, outdir, piece_bytes)
    finally:
        payload.unlink()
    descriptions = descriptions or {}
    for c in contents:
        top = c["path"].split("/", 1)[0]
        if top in descriptions:
            c["what"] = descriptions[top]
    index = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "payload": {"name": PAYLOAD, "bytes": hashing.bytes, "sha256": hashing.hash.hexdigest(),
                    "compression": f"xz (LZMA2 preset {preset}, dictionary {DICT_BYTES // MIB} MiB)",
                    "unpacked_bytes": sum(c["bytes"] for c in contents), "files": len(contents)},
        "piece_bytes_max": piece_bytes,
        "pieces": pieces,
        "groups": descriptions,
        "contents": contents,
        "meta": meta or {},
    }
    _write_index(outdir, index)
    return index


def resplit(outdir: str | os.PathLike[str], piece_bytes: int) -> dict[str, Any]:
    """Cut the pieces in `outdir` again, at most `piece_bytes` each, without compressing anew
    (the payload and its sha256 stay the same)."""
    outdir = Path(outdir)
    index = read_index(outdir / INDEX)
    payload = outdir / (PAYLOAD + ".tmp")
    h = hashlib.sha256()
    with open(payload, "wb") as out:
        for piece in index["pieces"]:
            data = (outdir / piece["name"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != piece["sha256"]:
                raise ValueError(f"{outdir / piece['name']}: sha256 differs from {INDEX}")
            out.write(data)
            h.update(data)
    try:
        if h.hexdigest() != index["payload"]["sha256"]:
            raise ValueError(f"the pieces in {outdir} do not make the payload {INDEX} names")
        index["pieces"] = _cut(payload, outdir, piece_bytes)
    finally:
        payload.unlink()
    index["piece_bytes_max"] = piece_bytes
    _write_index(outdir, index)
    return index


# -- stashing and unpacking (GPU machine) ---------------------------------------------------------
def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    index = json.loads(Path(path).read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def stash_dir(root: str | os.PathLike[str], index: dict[str, Any]) -> Path:
    """Pieces of one payload live under ROOT/pieces/<payload sha256[:16]>: pieces of a different
    prepare never mix with these."""
    return Path(root) / "pieces" / index["payload"]["sha256"][:16]


def stash(outdir: str | os.PathLike[str], root: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Copy the pieces present in `outdir` (checked against the index) under ROOT; keep the index
    there too. Returns (index, names stashed now, names still missing)."""
    outdir, root = Path(outdir), Path(root)
    here = outdir / INDEX
    if here.is_file():
        index = read_index(here)
    else:  # a call that carries a piece but no index: use the one stashed before, if any
        known = sorted((root / "pieces").glob(f"*/{INDEX}"), key=lambda p: p.stat().st_mtime)
        if not known:
            raise FileNotFoundError(f"{here}: no index here and none stashed under {root} "
                                    f"(carry {INDEX} with the piece)")
        index = read_index(known[-1])
    dest = stash_dir(root, index)
    dest.mkdir(parents=True, exist_ok=True)
    if here.is_file():
        shutil.copyfile(here, dest / INDEX)
    now = []
    for piece in index["pieces"]:
        src, dst = outdir / piece["name"], dest / piece["name"]
        if not src.is_file() or (dst.is_file() and dst.stat().st_size == piece["bytes"]):
            continue
        if src.stat().st_size != piece["bytes"] or sha256_file(src) != piece["sha256"]:
            raise ValueError(f"{src}: size or sha256 differs from {INDEX} "
                             "(damaged in transfer, or from another prepare)")
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        now.append(piece["name"])
    missing = [p["name"] for p in index["pieces"]
               if not ((dest / p["name"]).is_file() and (dest / p["name"]).stat().st_size == p["bytes"])]
    return index, now, missing


class _Joined(io.RawIOBase):
    """The pieces read back to back as one stream, hashed as they go."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = list(paths)
        self.hash = hashlib.sha256()
        self._f: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while True:
            if self._f is None:
                if not self.paths:
                    return 0
                self._f = open(self.paths.pop(0), "rb")
            n = self._f.readinto(b)
            if n:
                self.hash.update(memoryview(b)[:n])
                return n
            self._f.close()
            self._f = None


def unpack(root: str | os.PathLike[str], dest: str | os.PathLike[str],
           index: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check every stashed piece, extract the payload into `dest` (replaced), check the whole
    stream's sha256 and every file's. Skips the work when `dest` already holds this payload."""
    root, dest = Path(root), Path(dest)
    if index is None:
        known = sorted((root / "pieces").glob(f"*/{INDEX}"), key=lambda p: p.stat().st_mtime)
        if not known:
            raise FileNotFoundError(f"no {INDEX} stashed under {root}")
        index = read_index(known[-1])
    done = dest / ".payload-sha256"
    if done.is_file() and done.read_text().strip() == index["payload"]["sha256"]:
        return index
    src = stash_dir(root, index)
    paths = []
    for piece in index["pieces"]:
        p = src / piece["name"]
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing")
        if p.stat().st_size != piece["bytes"] or sha256_file(p) != piece["sha256"]:
            raise ValueError(f"{p}: sha256 differs from {INDEX}")
        paths.append(p)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    joined = _Joined(paths)
    with lzma.LZMAFile(io.BufferedReader(joined, _BLOCK), "rb") as xz:
        with tarfile.open(fileobj=xz, mode="r|") as tar:
            for member in tar:
                target = (tmp / member.name).resolve()
                if not member.isfile() or tmp.resolve() not in target.parents:
                    raise ValueError(f"payload member {member.name!r}: not a plain file inside the payload")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as f, open(target, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(f, out, _BLOCK)
                os.chmod(target, member.mode & 0o777)
        while xz.read(_BLOCK):  # the tar's end padding: read the stream to its end so the hash covers it
            pass
    while joined.readinto(bytearray(_BLOCK)):
        pass
    if joined.hash.hexdigest() != index["payload"]["sha256"]:
        raise ValueError(f"reassembled payload sha256 {joined.hash.hexdigest()} differs from {INDEX}")
    for c in index["contents"]:
        p = tmp / c["path"]
        if not p.is_file() or p.stat().st_size != c["bytes"] or sha256_file(p) != c["sha256"]:
            raise ValueError(f"payload file {c['path']}: missing or sha256 differs from {INDEX}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    (dest / ".payload-sha256").write_text(index["payload"]["sha256"] + "\n")
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("stage")
    p.add_argument("outdir")
    p.add_argument("--piece-bytes", type=int, default=DEFAULT_PIECE_BYTES)
    p.add_argument("--preset", type=int, default=9)
    p.add_argument("--order", default="", help="comma-separated top-level names to put first, in this order")
    p.add_argument("--meta", default=None, help="JSON file whose object goes into the index as 'meta'")
    p.add_argument("--describe", default=None, help="JSON file {top-level name: what it is}")
    s = sub.add_parser("stash")
    s.add_argument("outdir")
    s.add_argument("root")
    r = sub.add_parser("resplit", help="cut existing pieces again (no recompression)")
    r.add_argument("outdir")
    r.add_argument("--piece-bytes", type=int, default=DEFAULT_PIECE_BYTES)
    u = sub.add_parser("unpack")
    u.add_argument("root")
    u.add_argument("dest")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        meta = json.loads(Path(args.meta).read_text()) if args.meta else None
        describe = json.loads(Path(args.describe).read_text()) if args.describe else None
        index = pack(args.stage, args.outdir, args.piece_bytes, args.preset,
                     [n for n in args.order.split(",") if n], meta, describe)
        print(f"{len(index['pieces'])} piece(s), {index['payload']['bytes'] / MIB:.1f} MiB "
              f"({index['payload']['unpacked_bytes'] / MIB:.1f} MiB unpacked) in {args.outdir}")
        return 0
    if args.cmd == "resplit":
        index = resplit(args.outdir, args.piece_bytes)
        print(f"{len(index['pieces'])} piece(s) of at most {args.piece_bytes / MIB:.1f} MiB in {args.outdir}")
        return 0
    if args.cmd == "stash":
        try:
            index, now, missing = stash(args.outdir, args.root)
        except (OSError, ValueError) as e:
            print(f"lmrec-gpu: cannot stash: {e}")
            return 1
        n = len(index["pieces"])
        have = n - len(missing)
        got = f"stashed {', '.join(now)}" if now else "stashed nothing new"
        if missing:
            print(f"lmrec-gpu: {got} ({have}/{n} pieces under {stash_dir(args.root, index)}); "
                  f"missing: {', '.join(missing)}")
            return 3
        print(f"lmrec-gpu: {got}; all {n} pieces present")
        return 0
    try:
        index = unpack(args.root, args.dest)
    except (OSError, ValueError, EOFError, lzma.LZMAError, tarfile.TarError) as e:
        print(f"lmrec-gpu: cannot unpack: {e}")
        return 1
    print(f"lmrec-gpu: payload {index['payload']['sha256'][:16]} unpacked into {args.dest} "
          f"({index['payload']['files']} files, every sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
