"""CIFAR-10/100 experiments of Sec. 5 (Figs. 3-6): `configs/cifar.py:DATASET,MODEL`.

DATASET: cifar10 | cifar100 | cifar10_jpeg (the JPEG CIFAR-10 training set in
../shared/data/cifar10-jpeg, last 500 images per class held out for
validation). MODEL: resnet18 | resnet34 | resnet50 | vgg11 | vgg16 | resnet20.

200 epochs, lr 0.1·m/64 (m = per-device batch, the paper's "batch size per
GPU") ÷10 every 60 epochs, SGD momentum 0.9, weight decay 1e-4, MBN T = 180,
m0 = 32, τ0 = 0.85, per-device batch 2 (override with
--config.per_device_batch_size). See configs/default.py for every field.
"""

from configs import default, schedule

DATASETS = ("cifar10", "cifar100", "cifar10_jpeg")


def get_config(arg: str = "cifar10,resnet18"):
  parts = [p.strip() for p in arg.split(",")]
  if len(parts) != 2 or parts[0] not in DATASETS:
    raise ValueError(
      f"configs/cifar.py takes 'DATASET,MODEL' with DATASET in {DATASETS}, got {arg!r}."
    )
  dataset, model = parts
  config = default.get_config()
  config.model = model
  config.input_variant = "cifar"
  schedule.paper_shape(config, 200)  # lr ÷10 after epochs 60, 120, 180; T = 180.
  config.lr_reference_batch_size = 64
  config.per_device_batch_size = 2
  config.eval_per_device_batch_size = 100
  config.dataset.augment = "crop_flip"
  config.dataset.crop_padding = 4
  if dataset == "cifar10_jpeg":
    config.dataset.source = "image_folder"
    config.dataset.root = "../shared/data/cifar10-jpeg"
    config.dataset.train_split = "train"
    config.dataset.eval_split = ""
    config.dataset.holdout_per_class = 500
    config.dataset.cache_dir = "~/.cache/mbn_jax/datasets"  # 50k JPEG decodes: once.
  else:
    config.dataset.source = "tfds"
    config.dataset.name = dataset
    config.dataset.train_split = "train"
    config.dataset.eval_split = "test"
  return config
