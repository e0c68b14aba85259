"""The CPU-scale reproduction (issue #5): CIFAR-10 JPEGs × resnet20, a short schedule.

Data: ../shared/data/cifar10-jpeg. Validation = the last 500 images of every
class (5,000 images, never trained on); training = the first 500 of every
class of the rest (5,000 images, a class-balanced subset).

Schedule, shortened from the paper's 200 epochs (lr ÷10 at 60/120/180, MBN
T = 180) to 4 epochs: lr = 0.1·m/64 ÷10 after epoch 3, MBN T = 4 (so λ reaches
its final value 1 − m/32 in the last epoch, as at epochs 180-200 in the
paper), m0 = 32, τ0 = 0.85, SGD momentum 0.9, weight decay 1e-4, standard
crop + flip augmentation. One device; per-device batch m = 2 by default.

    python -m train.sweep --config configs/cifar10_resnet20_cpu.py \\
        --root workdirs/cpu_repro --norms bn,mbn,brn,gn --batch_sizes 2,8,32 --seeds 0,1
"""

from configs import cifar


def get_config():
  config = cifar.get_config("cifar10_jpeg,resnet20")
  config.dataset.train_per_class = 500
  config.num_epochs = 4
  config.mbn_total_epochs = 4
  config.lr_decay_epochs = 3
  config.eval_every_epochs = 1
  config.log_every_steps = 100
  return config
