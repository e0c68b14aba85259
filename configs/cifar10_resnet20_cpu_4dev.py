"""Issue 22: the paper's data-parallel setting at CPU scale — 4 devices, 2 images each.

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

The learning rate is the paper's "0.1·m/64" read as the program reads it,
m = the per-device batch (``lr_batch_size='per_device'``); the ``-globallr``
arms read m as the global batch instead (``lr_batch_size='global'``), to see
whether the conclusion depends on the reading. ``bn8`` is the large-batch
reference of the paper's Fig. 4 (8 per GPU).

Population ("precise") statistics after every epoch: 5 augmented training
batches of 250 images per device, pooled over the 4 devices — 5,000 images,
one pass over the subset, as the one-device reproduction's 20 × 250.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m train \\
        --config configs/cifar10_resnet20_cpu_4dev.py:syncbn --workdir /tmp/syncbn
"""

from configs import cifar10_resnet20_cpu

DEVICES = 4
# ARM -> (norm, per-device batch, synchronized statistics, lr_batch_size).
ARMS = {
  "bn": ("bn", 2, False, "per_device"),
  "mbn": ("mbn", 2, False, "per_device"),
  "syncbn": ("bn", 2, True, "per_device"),
  "syncmbn": ("mbn", 2, True, "per_device"),
  "gn": ("gn", 2, False, "per_device"),
  "bn8": ("bn", 8, False, "per_device"),
  "bn-globallr": ("bn", 2, False, "global"),
  "mbn-globallr": ("mbn", 2, False, "global"),
  "syncbn-globallr": ("bn", 2, True, "global"),
}


def get_config(arm: str = "mbn"):
  if arm not in ARMS:
    raise ValueError(
      f"configs/cifar10_resnet20_cpu_4dev.py takes one ARM of {', '.join(ARMS)}, got {arm!r}."
    )
  norm, m, sync, lr_batch_size = ARMS[arm]
  config = cifar10_resnet20_cpu.get_config()
  config.required_devices = DEVICES
  config.norm = norm
  config.per_device_batch_size = m
  config.norm_sync_devices = -1 if sync else 1  # -1: all 4 devices (SyncBN)
  config.lr_batch_size = lr_batch_size
  # One pass over the 5,000 training images, pooled over the 4 devices.
  config.precise_stats_batches = 5 if norm != "gn" else 0
  config.precise_stats_batch_size = 250
  return config
