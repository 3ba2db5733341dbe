"""What can be wrong with a checkpoint, a marker or a network pickle: the errors of run/, in a module of their own
so the readers (checkpoint_read.py, pickle_reader.py, stylegan2_ada.py, weights.py) import them without importing
each other."""

from __future__ import annotations

from distgan.config import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class MarkerError(ValueError):
    """A COMPLETE marker that is neither this version's JSON nor an older version's `step N`."""


class PickleRefused(CheckpointError):
    """The pickle holds something distgan does not rebuild, or is not a network pickle; the message says what."""
