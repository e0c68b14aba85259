"""The input pipeline's two error types; the training program prints either as one ``error:`` line."""

from __future__ import annotations

__all__ = ["DataConfigError", "DatasetUnavailableError"]


class DatasetUnavailableError(RuntimeError):
  """A dataset is neither on disk nor downloadable."""


class DataConfigError(ValueError):
  """The data cannot be used as configured (an undecodable image, a batch larger than the
  training set, a hold-out larger than a class): the message names the file or field."""
