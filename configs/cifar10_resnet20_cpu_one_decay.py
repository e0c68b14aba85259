"""ABLATION (issue 11): the CPU reproduction with one learning-rate decay instead of three.

Identical to ``configs/cifar10_resnet20_cpu.py`` (data, model, 10 epochs,
MBN T = 9, precise statistics every epoch) except the learning rate: ÷10
once, after epoch 9 (90 %), so the last epoch runs at 0.1 × base instead of
the paper's 0.001 × base. Not the paper's schedule: it tests whether the gap
between MBN's as-trained inference statistics and population statistics
comes from weights that still move at the end of training (the earlier
CPU runs divided once and reported that gap).

| | paper (CIFAR) | faithful CPU config | this ablation |
|---|---|---|---|
| epochs | 200 | 10 | 10 |
| lr ÷10 after epochs | 60, 120, 180 | 3, 6, 9 | 9 |
| MBN's T | 180 | 9 | 9 |
| last epoch's lr | 0.001 × base | 0.001 × base | 0.1 × base |

    python -m tools.sweep --config configs/cifar10_resnet20_cpu_one_decay.py \\
        --root workdirs/one_decay --norms bn,mbn --batch_sizes 2 --seeds 0,1,2
"""

from configs import cifar10_resnet20_cpu


def get_config():
  config = cifar10_resnet20_cpu.get_config()
  config.lr_decay_epochs = 9  # ÷10 after epoch 9 only (the next would be after 18 > 10).
  return config
