"""Issue 31: fine-tuning at 2 images per device — what should a user do there?

``configs/cifar10_resnet20_finetune.py:ARM``. Every arm starts from a network
pretrained by ``configs/cifar10_resnet20_pretrain.py`` (resnet20, BN at batch
32, one device, on airplane, automobile, bird, cat, deer) and fine-tunes it on
the other five CIFAR-10 classes — dog, frog, horse, ship, truck — with 500
training images per class (validation: the last 500 per class) on **4
devices × 2 images** (``XLA_FLAGS=--xla_force_host_platform_device_count=4``;
``required_devices=4``), 10 epochs of the paper's shape (lr 0.1·2/64, ÷10 after
epochs 3, 6, 9), the classifier head re-initialized (5 new classes), inputs
normalized with CIFAR-10's fixed mean and std as in pretraining:

| ARM | norm | statistics | starts from |
|---|---|---|---|
| ``frozen_bn`` | FrozenBN (statistics and γ/β frozen: detectron2's default) | none estimated | ``plain`` |
| ``bn`` | BN per device | 2 images | ``plain`` |
| ``syncbn`` | BN over all 4 devices | 8 images | ``plain`` |
| ``mbn`` | MBN, the paper's λ ramp from 0 | 2 images | ``plain`` |
| ``mbn-pretrained`` | MBN, λ = 1 − m/m0 from the first step, ``train_mean``/``train_var`` from the pretrained statistics | 2 images | ``plain`` |
| ``mabn`` | MABN, centred convolution weights | 2 images | ``centred`` |

``PRETRAINED`` (below) is where the pretrained runs' workdirs are, relative to
the directory the command runs in.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m train \\
        --config configs/cifar10_resnet20_finetune.py:frozen_bn --workdir /tmp/ft_frozen
"""

from configs import cifar10_resnet20_cpu
from configs import cifar10_resnet20_pretrain as pretrain
from mbn_jax.norms import norm_class

PRETRAINED = "workdirs/pretrain"  # <PRETRAINED>/plain and <PRETRAINED>/centred
DEVICES = 4
# ARM -> (norm, norm_sync_devices, MBN's λ ramp, pretrained arm = centred weights).
ARMS = {
  "frozen_bn": ("frozen_bn", 1, True, "plain"),
  "bn": ("bn", 1, True, "plain"),
  "syncbn": ("bn", -1, True, "plain"),
  "mbn": ("mbn", 1, True, "plain"),
  "mbn-pretrained": ("mbn", 1, False, "plain"),
  "mabn": ("mabn", 1, True, "centred"),
}


def get_config(arm: str = "frozen_bn"):
  if arm not in ARMS:
    raise ValueError(
      f"configs/cifar10_resnet20_finetune.py takes one ARM of {', '.join(ARMS)}, got {arm!r}."
    )
  norm, group, ramp, source = ARMS[arm]
  config = cifar10_resnet20_cpu.get_config()  # 500 per class, 10 epochs of the paper's shape
  config.required_devices = DEVICES
  config.norm = norm
  config.per_device_batch_size = 2
  config.norm_sync_devices = group
  config.mbn_lambda_ramp = ramp
  config.centered_weights = pretrain.ARMS[source]
  config.init_from = f"{PRETRAINED}/{source}"
  config.init_from_reset_head = True  # five other classes (as many as pretraining's): a new head
  config.dataset.classes = pretrain.FINE_TUNE_CLASSES
  config.dataset.mean = pretrain.CIFAR10_MEAN
  config.dataset.std = pretrain.CIFAR10_STD
  # One pass over the 2,500 training images, pooled over the 4 devices (where re-estimable).
  config.precise_stats_batches = 5 if norm_class(norm).capabilities.precise_statistics else 0
  config.precise_stats_batch_size = 125
  config.precise_stats_every_eval = True
  return config
