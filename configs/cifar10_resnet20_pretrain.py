"""Issue 31: the pretrained network that the fine-tuning experiment starts from.

``configs/cifar10_resnet20_pretrain.py:ARM`` with ARM ``plain`` or ``centred``
(every conv kernel centred per output channel, for MABN's fine-tuning arm).

resnet20 with BN at a batch of 32 on **one device**, on five CIFAR-10 JPEG
classes — airplane, automobile, bird, cat, deer — all but the last 500 images
of each class (22,500 images); validation: those last 500 per class (2,500
images). The paper's schedule shape over 10 epochs (lr 0.1·32/64 = 0.05, ÷10
after epochs 3, 6, 9), SGD momentum 0.9, weight decay 1e-4, crop + flip.
Inputs are normalized with CIFAR-10's per-channel mean and standard deviation
(fixed, so that the fine-tuning runs on the other five classes see inputs on
the same scale as pretraining). Population statistics after the last epoch.

    python -m train --config configs/cifar10_resnet20_pretrain.py:plain \\
        --workdir workdirs/pretrain/plain
"""

from configs import cifar, schedule

PRETRAIN_CLASSES = "airplane,automobile,bird,cat,deer"
FINE_TUNE_CLASSES = "dog,frog,horse,ship,truck"
# CIFAR-10's training-set per-channel mean and standard deviation (pixels / 255).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
ARMS = {"plain": False, "centred": True}


def get_config(arm: str = "plain"):
  if arm not in ARMS:
    raise ValueError(
      f"configs/cifar10_resnet20_pretrain.py takes one ARM of {', '.join(ARMS)}, got {arm!r}."
    )
  config = cifar.get_config("cifar10_jpeg,resnet20")
  schedule.paper_shape(config, 10)
  config.norm = "bn"
  config.per_device_batch_size = 32
  config.required_devices = 1
  config.centered_weights = ARMS[arm]
  config.dataset.classes = PRETRAIN_CLASSES
  config.dataset.mean = CIFAR10_MEAN
  config.dataset.std = CIFAR10_STD
  config.eval_every_epochs = 1
  config.log_every_steps = 100
  config.precise_stats_batches = 20
  config.precise_stats_batch_size = 250
  return config
