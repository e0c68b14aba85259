"""Issue #5 ablation: the CPU reproduction's setting, trained 3× longer.

Same data, model and hyper-parameters as ``configs/cifar10_resnet20_cpu.py``
(5,000-image balanced training subset, resnet20, lr = 0.1·m/64, m0 = 32,
τ0 = 0.85), but 12 epochs instead of 4: lr ÷10 after epoch 9 and MBN T = 12,
so λ(t) ramps over 12 epochs and the last 3 epochs run at the decayed lr.
Asks whether MBN's advantage needs a longer schedule than 4 epochs.

    python -m train.sweep --config configs/cifar10_resnet20_cpu_long.py \\
        --root workdirs/cpu_repro_long --norms bn,mbn --batch_sizes 2 --seeds 0,1
"""

from configs import cifar10_resnet20_cpu


def get_config():
  config = cifar10_resnet20_cpu.get_config()
  config.num_epochs = 12
  config.mbn_total_epochs = 12
  config.lr_decay_epochs = 9
  return config
