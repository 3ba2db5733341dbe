"""Users' own images -> training shards, in three parts: `sources` (listing and reading every kind of input),
`convert` (ranges of inputs -> shards, resumable, in parts), `merge` (the manifest, and replacing a dataset
only once the new one is complete). This module is their public face: `distgan data images` and the tests use
these names."""

from __future__ import annotations

from distgan.data.convert import (
    PROGRESS_DIR,
    REASONS,
    Conversion,
    Item,
    Options,
    convert,
    convert_chunk,
    first_image,
    in_test,
    parse_part,
    part_ranges,
    to_mode,
)
from distgan.data.merge import STAGING, merge, prepare_out, promote
from distgan.data.source import ShardError
from distgan.data.sources import MAX_LABEL, Source, list_source, read_bytes, shown, sort_classes

__all__ = ["MAX_LABEL", "PROGRESS_DIR", "REASONS", "STAGING", "Conversion", "Item", "Options", "ShardError",
           "Source", "convert", "convert_chunk", "first_image", "in_test", "list_source", "merge", "parse_part",
           "part_ranges", "prepare_out", "promote", "read_bytes", "shown", "sort_classes", "to_mode"]  # fmt: skip
