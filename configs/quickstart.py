"""Quickstart: BN vs MBN at batch size 2 on scikit-learn's 8x8 digits.

Runs offline in a couple of minutes on 2 CPU cores: a tiny CNN
(train/models.py `tiny_cnn`, norms from mbn_jax.norms.make_norm) trained with
BN and then with MBN, per-device batch 2, into WORKDIR/bn and WORKDIR/mbn;
prints both validation accuracies side by side.

  python -m train --config configs/quickstart.py --workdir /tmp/mbn_quickstart

Data: 1797 digits; the last 36 of every class (360 images) are held out for
validation. The paper's schedule shape scaled from 200 to 10 epochs
(configs/schedule.py): lr ÷10 after epochs 3, 6, 9 (paper: 60, 120, 180) and
MBN's T = 9 (paper: 180); m0 = 32, τ0 = 0.85.
"""

from configs import default, schedule


def get_config():
  config = default.get_config()
  config.model = "tiny_cnn"
  config.norm = "mbn"
  config.norms = "bn,mbn"
  config.per_device_batch_size = 2
  config.eval_per_device_batch_size = 60
  schedule.paper_shape(config, 10)  # lr ÷10 after epochs 3, 6, 9; T = 9.
  config.base_learning_rate = 0.1
  config.lr_reference_batch_size = 64
  config.weight_decay = 1e-4
  config.dataset.source = "digits"
  config.dataset.name = "digits"
  config.dataset.train_split = "train"
  config.dataset.eval_split = ""
  config.dataset.holdout_per_class = 36
  config.dataset.augment = "none"
  config.log_every_steps = 100
  return config
