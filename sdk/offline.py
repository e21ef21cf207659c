"""Batch jobs over bundles, for nightly pipelines: embed a catalogue, build a bundle's index over
new vectors, recommend for every user, and pack a bundle into one checksummed file.

    from lmrec.offline import embed_file, build_bundle_index, pack_bundle
    embed_file("bundles/office", "catalogue.jsonl", "vectors.parquet")
    build_bundle_index("bundles/office", "vectors.parquet", "bundles/office-0601", items="catalogue.jsonl")
    pack_bundle("bundles/office-0601", "office-0601.tar.zst", precision="int8")

Each is also a command (`lmrec embed`, `lmrec index build`, `lmrec recommend-all`, `lmrec bundle
pack|unpack|verify|manifest`).
"""

from __future__ import annotations

from ._embed import DEFAULT_CHUNK, EmbedReport, default_workers, embed_file
from ._embed import work_dir as embed_work_dir
from ._index_build import DEFAULT_QUERIES, build_bundle_index, peak_rss_mb, sampled_recall
from ._pack import component_sizes, is_archive, pack_bundle, read_packed_manifest, unpack_bundle, verify_archive
from ._recommend_all import recommend_all
from ._tables import Vectors, read_vectors

__all__ = [
    "embed_file", "EmbedReport", "embed_work_dir", "default_workers", "DEFAULT_CHUNK", "build_bundle_index",
    "sampled_recall", "peak_rss_mb", "DEFAULT_QUERIES", "recommend_all", "pack_bundle", "unpack_bundle",
    "verify_archive", "read_packed_manifest", "is_archive", "component_sizes", "read_vectors", "Vectors",
]
