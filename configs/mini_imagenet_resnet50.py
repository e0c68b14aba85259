"""Mini-ImageNet-100 × ResNet50 (Sec. 5.4, Fig. 7).

Data: an image folder ``root/train/<class>/<image>`` with 600 images per
class (84x84); the paper trains on the first 500 images of each class and
tests on the other 100, i.e. ``holdout_per_class=100`` (file-name order).
Set ``--config.dataset.root=DIR``. 100 epochs, lr 0.1·m/128 (m = per-device
batch) ÷10 every 30 epochs, SGD momentum 0.9, weight decay 1e-4, MBN T = 100
(the paper: "the settings for MBN are the same as Section 5.3"; it states
T = 180 only for CIFAR, so we use the total epochs here), m0 = 32, τ0 = 0.85.
Augmentation: 8-pixel pad + random 84x84 crop and horizontal flip.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = "resnet50"
  config.input_variant = "mini_imagenet"
  config.num_epochs = 100
  config.mbn_total_epochs = 100
  config.lr_reference_batch_size = 128
  config.lr_decay_epochs = 30
  config.per_device_batch_size = 2
  config.eval_per_device_batch_size = 50
  config.dataset.source = "image_folder"
  config.dataset.root = "mini-imagenet"
  config.dataset.train_split = "train"
  config.dataset.eval_split = ""
  config.dataset.holdout_per_class = 100
  config.dataset.image_size = 84
  config.dataset.augment = "crop_flip"
  config.dataset.crop_padding = 8
  return config
