"""The CPU-scale reproduction (issue 11): CIFAR-10 JPEGs × resnet20, the paper's schedule shape.

Data: ../shared/data/cifar10-jpeg. Validation = the last 500 images of every
class (5,000 images, never trained on); training = the first 500 of every
class of the rest (5,000 images, a class-balanced subset).

Schedule: the paper's, scaled from 200 to 10 epochs with its shape kept
(configs/schedule.py):

| | paper (CIFAR) | here |
|---|---|---|
| epochs | 200 | 10 |
| lr ÷10 after epochs | 60, 120, 180 (30/60/90 %) | 3, 6, 9 |
| MBN's T (λ reaches 1 − m/m0) | 180 (90 %) | 9 |
| last epochs' lr | 0.001 × base | 0.001 × base |

lr = 0.1·m/64 (m = per-device batch), m0 = 32, τ0 = 0.85, SGD momentum 0.9,
weight decay 1e-4, crop + flip augmentation, BN/BReN momentum 0.9. One
device; m = 2 by default. After every epoch the network is also evaluated
with population ("precise") statistics from 20 augmented training batches of
250 images (one pass over the subset): ``eval_accuracy_precise``.

    python -m tools.sweep --config configs/cifar10_resnet20_cpu.py \\
        --root workdirs/faithful --norms bn,mbn --batch_sizes 2 --seeds 0,1,2
"""

from configs import cifar, schedule


def get_config():
  config = cifar.get_config("cifar10_jpeg,resnet20")
  config.dataset.train_per_class = 500
  schedule.paper_shape(config, 10)
  config.eval_every_epochs = 1
  config.log_every_steps = 100
  config.precise_stats_batches = 20
  config.precise_stats_batch_size = 250
  config.precise_stats_every_eval = True
  return config
