"""CIFAR10 × resnet18 (Sec. 5, Figs. 3-6): configs/cifar.py with 'cifar10,resnet18'."""

from configs import cifar


def get_config():
  return cifar.get_config("cifar10,resnet18")
