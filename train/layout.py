"""The run's batch layout: the one source of m, the devices and the statistics batch.

:func:`train.validation.validate_config` makes it from the config and the
devices JAX sees; the training program saves it in ``config.json`` and
``summary.json`` (``"layout"``); the analysis tools read it back with
:func:`layout_of_record` — for records written before it was saved, from the
config and ``run_info`` they hold.

* ``per_device_batch_size`` m: images per device per (micro-)batch;
* ``devices``: all devices of all processes; ``global_batch_size`` = m × devices;
* ``norm_sync_devices`` G: how many devices share one set of batch
  statistics (1 = per device, the paper's setting; ``devices`` = SyncBN);
* ``statistics_batch_size`` = m × G: the batch the norms' statistics are
  computed over, and the m of MBN's λ (Eq. 11) and τ (Eq. 12);
* ``grad_accum_steps`` k: micro-batches per optimizer step.
"""

from __future__ import annotations

import dataclasses

__all__ = ["RunLayout", "layout_of_record"]

# The fields saved in run records (the process fields describe one process only).
SAVED_FIELDS = (
  "per_device_batch_size",
  "devices",
  "global_batch_size",
  "norm_sync_devices",
  "statistics_batch_size",
  "grad_accum_steps",
)


@dataclasses.dataclass(frozen=True)
class RunLayout:
  """How a run's batch is split over devices and processes (see the module docstring)."""

  per_device_batch_size: int
  devices: int
  norm_sync_devices: int = 1
  grad_accum_steps: int = 1
  local_devices: int = 1
  process_count: int = 1
  process_index: int = 0
  norms: tuple[str, ...] = ()

  @property
  def global_batch_size(self) -> int:
    return self.per_device_batch_size * self.devices

  @property
  def statistics_batch_size(self) -> int:
    """m × G: the batch every norm's statistics are computed over (λ and τ use it)."""
    return self.per_device_batch_size * self.norm_sync_devices

  @property
  def optimizer_batch_size(self) -> int:
    """The global batch whose mean gradient one update applies: global × k."""
    return self.global_batch_size * self.grad_accum_steps

  @property
  def is_main(self) -> bool:
    return self.process_index == 0

  def to_record(self) -> dict:
    """The saved part: :data:`SAVED_FIELDS`."""
    return {name: getattr(self, name) for name in SAVED_FIELDS}


def layout_of_record(record: dict) -> RunLayout:
  """The layout of a saved run (``config.json`` or ``summary.json`` contents).

  Uses ``record["layout"]`` when present; older records are read from their
  ``run_info`` (``config.json``) or top-level fields (``summary.json``) and
  their config (``sync_batch_stats=True``: G = every device).
  """
  config = record.get("config", {})
  saved = record.get("layout")
  if saved is None:
    from train import config_schema  # the defaults of the fields an old record lacks

    defaults = config_schema.default_config()
    info = record.get("run_info", record)
    devices = int(info["devices"])
    saved = {
      "per_device_batch_size": int(info["per_device_batch_size"]),
      "devices": devices,
      "norm_sync_devices": devices if config.get("sync_batch_stats") else 1,
      "grad_accum_steps": int(
        info.get("grad_accum_steps", config.get("grad_accum_steps", defaults.grad_accum_steps))
      ),
    }
  return RunLayout(
    per_device_batch_size=int(saved["per_device_batch_size"]),
    devices=int(saved["devices"]),
    norm_sync_devices=int(saved["norm_sync_devices"]),
    grad_accum_steps=int(saved["grad_accum_steps"]),
  )
