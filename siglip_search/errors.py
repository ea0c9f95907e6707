"""Typed exceptions of the model package; the CLI and UI turn them into one-line messages."""


class SiglipSearchError(Exception):
    """Base class for errors a user can act on."""


class CheckpointError(SiglipSearchError):
    """A checkpoint directory, file or hub id cannot be loaded as SigLIP."""


class ModelNotCachedError(CheckpointError):
    """A hub id is not in the local cache and cannot be downloaded."""


class InputError(SiglipSearchError, ValueError):
    """Text or image input that the model cannot take."""


def unexpected_keywords(where: str, names: list[str]) -> TypeError:
    """The TypeError Python raises for an unknown keyword argument, for functions that take **kwargs
    (so that a typo such as revison="v2" stops the call instead of being dropped)."""
    if len(names) == 1:
        return TypeError(f"{where}() got an unexpected keyword argument {names[0]!r}")
    return TypeError(f"{where}() got unexpected keyword arguments {', '.join(map(repr, names))}")
