"""CIFAR-10 from the JPEG folder ../shared/data/cifar10-jpeg × ResNet18.

Validation = the last 500 images of every class (5,000 images), training =
the other 45,000. Run from the repository root. See configs/cifar.py.
"""

from configs import cifar


def get_config():
  return cifar.get_config("cifar10_jpeg,resnet18")
