"""Typed exceptions of the model package; the CLI and UI turn them into one-line messages."""


class SiglipSearchError(Exception):
    """Base class for errors a user can act on."""


class CheckpointError(SiglipSearchError):
    """A checkpoint directory, file or hub id cannot be loaded as SigLIP."""


class ModelNotCachedError(CheckpointError):
    """A hub id is not in the local cache and cannot be downloaded."""


class InputError(SiglipSearchError, ValueError):
    """Text or image input that the model cannot take."""
