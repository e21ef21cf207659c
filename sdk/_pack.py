"""One file to ship a bundle: a zstd-compressed tar whose first member is the manifest.

The archive is a plain `.tar.zst` (`tar --zstd -xf` opens it anywhere), written deterministically
(sorted members, zeroed owners and times). The manifest is the first member and alone in the
first zstd frame, so `read_packed_manifest` decompresses only that frame (a few kilobytes); every
other member is checked against the manifest's sha256 and size while it streams, and the zstd
frame carries its own checksum. An edge bundle (`precision="int8"`, …) carries one encoder; its
manifest lists only what it carries and records what was dropped. With every precision the
manifest is copied byte for byte, so the unpacked bundle is identical to the original (same
manifest hash, so its state directories still fit).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ._bundle import Bundle, BundleWriter, check_name
from ._durable import check_creatable, fsync_dir, fsync_tree
from ._errors import BundleError, LmrecError, require
from ._manifest import FileEntry, Manifest

MANIFEST = Manifest.MANIFEST
SUFFIX = ".tar.zst"
PRECISIONS = ("all", *Manifest.ENCODER_FILES)
DEFAULT_LEVEL = 6
_BLOCK = 1 << 20


def is_archive(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_file() and str(path).endswith(SUFFIX)


def _zstd() -> Any:
    require("zstandard", "pack", "Packed bundles (.tar.zst)")
    import zstandard

    return zstandard


def component_sizes(files: dict[str, FileEntry]) -> dict[str, int]:
    """Bytes of a bundle's files by what they are: model (encoders, tokenizer, user model),
    vectors, index, items (texts and metadata) and other."""
    sizes = {"model": 0, "vectors": 0, "index": 0, "items": 0, "other": 0}
    for name, entry in files.items():
        if name.endswith(".onnx") or name in ("tokenizer.json", "projection.npy"):
            key = "model"
        elif name == "item_vectors.npy":
            key = "vectors"
        elif name.startswith("index/"):
            key = "index"
        elif name == "items.jsonl":
            key = "items"
        else:
            key = "other"
        sizes[key] += int(entry.bytes)
    return sizes


def pack_bundle(bundle_dir: str | os.PathLike[str], out: str | os.PathLike[str], precision: str = "all",
                level: int = DEFAULT_LEVEL, overwrite: bool = False) -> dict[str, Any]:
    """Write `out` (.tar.zst) from the bundle at `bundle_dir` (verified first). Returns sizes."""
    zstandard = _zstd()
    out = Path(out)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 22:
        raise ValueError(f"level {level!r}: must be an integer from 1 to 22 (zstd levels)")
    if not str(out).endswith(SUFFIX):
        raise LmrecError(f"{out}: the archive name must end in {SUFFIX}")
    if out.exists() and not overwrite:
        raise LmrecError(f"{out}: already exists (pass --overwrite to replace it)")
    check_creatable(out, "archive")
    bundle = Bundle.open(bundle_dir)
    raw = (bundle.path / MANIFEST).read_bytes()
    files = dict(bundle.manifest.files)
    if precision != "all":
        bundle.encoder_path(precision)  # raises when the bundle has no such encoder
        dropped = sorted(f for p, f in Manifest.ENCODER_FILES.items() if p != precision and f in files)
        for name in dropped:
            del files[name]
        packed = {"precision": precision, "dropped": dropped, "from_manifest_sha256": bundle.sha256}
        raw = bundle.manifest.replace(files=files, packed=packed).dumps().encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            # Frame 1 holds only the manifest's tar member, so reading it needs the first frame only.
            f.write(
                zstandard.ZstdCompressor(level=level, write_checksum=True).compress(
                    _member(MANIFEST, len(raw)) + raw + _pad(len(raw))
                )
            )
            compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=-1)
            with compressor.stream_writer(f, closefd=False) as z:
                for name in sorted(files):
                    size = files[name].bytes
                    z.write(_member(name, size))
                    with open(bundle.path / name, "rb") as src:
                        shutil.copyfileobj(src, z, _BLOCK)
                    z.write(_pad(size))
                z.write(b"\0" * 2 * tarfile.BLOCKSIZE)  # end of archive
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"archive": str(out), "archive_bytes": out.stat().st_size, "precision": precision,
            "files": len(files), "bundle_bytes": sum(e.bytes for e in files.values()) + len(raw),
            "components": component_sizes(files)}


def _member(name: str, size: int) -> bytes:
    """The tar header block(s) of a regular file, with zeroed owner and time (reproducible)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = int(size), 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


@contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[tarfile.TarFile, Manifest, bytes]]:
    """The archive's tar stream, positioned after its manifest (parsed and raw)."""
    zstandard = _zstd()
    if not archive.is_file():
        raise BundleError(f"{archive}: no such file")
    with open(archive, "rb") as f:
        try:
            with (
                zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as z,
                tarfile.open(fileobj=z, mode="r|") as tar,
            ):
                first = tar.next()
                if first is None or first.name != MANIFEST or not first.isfile():
                    raise BundleError(f"{archive}: the first member is not {MANIFEST} (not an lmrec bundle archive)")
                raw = _read(tar, first)
                yield tar, Manifest.loads(raw, str(archive)), raw
        except (zstandard.ZstdError, tarfile.TarError, EOFError) as e:
            raise BundleError(f"{archive}: corrupted archive ({type(e).__name__}: {e})") from None


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    src = tar.extractfile(member)
    if src is None:
        raise BundleError(f"{member.name}: not a regular file")
    return src.read()


def read_packed_manifest(archive: str | os.PathLike[str]) -> Manifest:
    """The manifest of a packed bundle, reading only the archive's first member."""
    with _open_archive(Path(archive)) as (_tar, manifest, _raw):
        return manifest


def _members(tar: tarfile.TarFile, manifest: Manifest, sink: Path | None) -> Iterator[str]:
    """Check every member against the manifest while streaming it (into `sink` when given);
    yields one problem line each."""
    files = manifest.files
    seen: set[str] = set()
    while (member := tar.next()) is not None:  # not `for … in tar`: that starts again at the manifest
        name = member.name
        try:
            check_name(name)
        except ValueError as e:
            yield str(e)
            continue
        if name not in files or name in seen:
            yield f"{name}: {'appears twice' if name in seen else f'not listed in {MANIFEST}'}"
            continue
        if not member.isfile():
            yield f"{name}: not a regular file in the archive"
            continue
        seen.add(name)
        src: IO[bytes] = tar.extractfile(member)  # type: ignore[assignment]
        digest, size = hashlib.sha256(), 0
        dst = None
        if sink is not None:
            target = sink / name
            target.parent.mkdir(parents=True, exist_ok=True)
            dst = open(target, "wb")
        try:
            while block := src.read(_BLOCK):
                digest.update(block)
                size += len(block)
                if dst is not None:
                    dst.write(block)
        finally:
            if dst is not None:
                dst.close()
        if size != files[name].bytes:
            yield f"{name}: size {size} bytes, manifest says {files[name].bytes}"
        elif digest.hexdigest() != files[name].sha256:
            yield f"{name}: sha256 mismatch (file changed or corrupted)"
    for name in sorted(set(files) - seen):
        yield f"{name}: missing from the archive"


def verify_archive(archive: str | os.PathLike[str]) -> list[str]:
    """Every problem of a packed bundle as one line each; an empty list means it is intact."""
    archive = Path(archive)
    try:
        with _open_archive(archive) as (tar, manifest, _raw):
            return list(_members(tar, manifest, None))
    except BundleError as e:
        return [str(e)]


def unpack_bundle(archive: str | os.PathLike[str], out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Unpack `archive` into the new bundle directory `out_dir`, checking every file on the way;
    nothing appears at `out_dir` unless the whole bundle is intact."""
    archive, out_dir = Path(archive), Path(out_dir).expanduser().absolute()
    BundleWriter.check_target(out_dir, overwrite, "bundle directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with _open_archive(archive) as (tar, manifest, raw):
            problems = list(_members(tar, manifest, tmp))
        if problems:
            raise BundleError(f"{archive}: " + "; ".join(problems))
        (tmp / MANIFEST).write_bytes(raw)
        fsync_tree(tmp)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


__all__ = ["pack_bundle", "unpack_bundle", "verify_archive", "read_packed_manifest", "is_archive",
           "component_sizes", "SUFFIX", "PRECISIONS"]
