"""Users' own images -> training shards, in three parts: `image_sources` (listing and reading every kind of input),
`convert` (ranges of inputs -> shards, resumable, in parts), `merge` (the manifest, and replacing a dataset
only once the new one is complete). This module is their public face: `distgan data images` and the tests use
these names."""

from __future__ import annotations

from distgan.data.convert import (
    PROGRESS_DIR,
    Conversion,
    Options,
    convert,
    first_image,
    in_test,
    parse_part,
    part_ranges,
)
from distgan.data.image_sources import list_source, sort_classes
from distgan.data.merge import STAGING, merge, prepare_out, promote
from distgan.data.shard_writer import ShardError

__all__ = [
    "PROGRESS_DIR",
    "STAGING",
    "Conversion",
    "Options",
    "ShardError",
    "convert",
    "first_image",
    "in_test",
    "list_source",
    "merge",
    "parse_part",
    "part_ranges",
    "prepare_out",
    "promote",
    "sort_classes",
]
