"""Issues 22 and 36: the paper's data-parallel setting at CPU scale — 4 devices, 2 images each.

``configs/cifar10_resnet20_cpu_4dev.py:ARM``. Every arm runs on **4 devices**
(on CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``;
``required_devices=4`` refuses any other count) with the CPU reproduction's
data and schedule (``configs/cifar10_resnet20_cpu.py``: resnet20, 5,000
CIFAR-10 JPEG training images, validation = the last 500 per class, 10 epochs,
lr ÷10 after epochs 3, 6, 9, MBN's T = 9, m0 = 32, τ0 = 0.85). The gradient is
always the mean over the global batch (``pmean`` of the per-device gradients);
the arms differ in the statistics batch, the norm and the learning rate:

| ARM | norm | per device | global batch | statistics batch (λ, τ) | lr |
|---|---|---|---|---|---|
| ``bn`` | BN | 2 | 8 | 2 (per device) | 0.1·2/64 = 0.003125 |
| ``mbn`` | MBN | 2 | 8 | 2 (per device; λ, τ for m = 2) | 0.003125 |
| ``syncbn`` | BN | 2 | 8 | 8 (all 4 devices) | 0.003125 |
| ``syncmbn`` | MBN | 2 | 8 | 8 (all 4 devices; λ, τ for m = 8) | 0.003125 |
| ``gn`` | GN | 2 | 8 | — (per image) | 0.003125 |
| ``bn8`` | BN | 8 | 32 | 8 (per device) | 0.1·8/64 = 0.0125 |
| ``bn-globallr`` | BN | 2 | 8 | 2 | 0.1·8/64 = 0.0125 |
| ``mbn-globallr`` | MBN | 2 | 8 | 2 | 0.0125 |
| ``syncbn-globallr`` | BN | 2 | 8 | 8 | 0.0125 |

Issue 36, what comes closest to SyncBN without an all-reduce (lr 0.003125,
per device 2, global batch 8; "centred": every conv kernel centred per output
channel, ``centered_weights=True``, MABN's CenConv2d):

| ARM | norm | statistics batch | centred |
|---|---|---|---|
| ``mabn-centred`` | MABN (K = 32/2 = 16, the reference's settings) | 2 (per device) | yes |
| ``mabn`` | MABN | 2 (per device) | no |
| ``bn-centred`` | BN | 2 (per device) | yes |
| ``mbn-centred`` | MBN | 2 (per device) | yes |
| ``bn-g2`` | BN | 4 (pairs of devices, ``norm_sync_devices=2``) | no |
| ``mbn-g2`` | MBN | 4 (pairs; λ and τ for m = 4) | no |

The learning rate is the paper's "0.1·m/64" read as the program reads it,
m = the per-device batch (``lr_batch_size='per_device'``); the ``-globallr``
arms read m as the global batch instead (``lr_batch_size='global'``), to see
whether the conclusion depends on the reading. ``bn8`` is the large-batch
reference of the paper's Fig. 4 (8 per GPU).

Population ("precise") statistics after every epoch: 5 augmented training
batches of 250 images per device, pooled over the 4 devices — 5,000 images,
one pass over the subset, as the one-device reproduction's 20 × 250 (none
for norms whose capabilities say they cannot be re-estimated: GN, MABN).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m train \\
        --config configs/cifar10_resnet20_cpu_4dev.py:syncbn --workdir /tmp/syncbn
"""

from configs import cifar10_resnet20_cpu
from mbn_jax.norms import norm_class

DEVICES = 4
# ARM -> (norm, per-device batch, norm_sync_devices G (1: per device, -1: all), lr_batch_size,
# centred convolution weights).
ARMS = {
  "bn": ("bn", 2, 1, "per_device", False),
  "mbn": ("mbn", 2, 1, "per_device", False),
  "syncbn": ("bn", 2, -1, "per_device", False),
  "syncmbn": ("mbn", 2, -1, "per_device", False),
  "gn": ("gn", 2, 1, "per_device", False),
  "bn8": ("bn", 8, 1, "per_device", False),
  "bn-globallr": ("bn", 2, 1, "global", False),
  "mbn-globallr": ("mbn", 2, 1, "global", False),
  "syncbn-globallr": ("bn", 2, -1, "global", False),
  # Issue 36: no all-reduce over every device.
  "mabn-centred": ("mabn", 2, 1, "per_device", True),
  "mabn": ("mabn", 2, 1, "per_device", False),
  "bn-centred": ("bn", 2, 1, "per_device", True),
  "mbn-centred": ("mbn", 2, 1, "per_device", True),
  "bn-g2": ("bn", 2, 2, "per_device", False),
  "mbn-g2": ("mbn", 2, 2, "per_device", False),
}


def get_config(arm: str = "mbn"):
  if arm not in ARMS:
    raise ValueError(
      f"configs/cifar10_resnet20_cpu_4dev.py takes one ARM of {', '.join(ARMS)}, got {arm!r}."
    )
  norm, m, group, lr_batch_size, centred = ARMS[arm]
  config = cifar10_resnet20_cpu.get_config()
  config.required_devices = DEVICES
  config.norm = norm
  config.per_device_batch_size = m
  config.norm_sync_devices = group  # -1: all 4 devices (SyncBN)
  config.lr_batch_size = lr_batch_size
  config.centered_weights = centred
  # One pass over the 5,000 training images, pooled over the 4 devices (where re-estimable).
  config.precise_stats_batches = 5 if norm_class(norm).capabilities.precise_statistics else 0
  config.precise_stats_batch_size = 250
  return config
