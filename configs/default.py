"""Every field of the training program, with the paper's defaults.

`python -m train --config configs/<file>.py --workdir DIR`; any field can be
overridden on the command line, e.g. `--config.norm=bn
--config.per_device_batch_size=4 --config.dataset.data_dir=~/tensorflow_datasets`.

Reading of the paper (Yong et al., ECCV 2020, Sec. 5):

* ``per_device_batch_size`` is the paper's m, "batch size per GPU". It sets
  the statistics batch of every norm layer (m·G when ``norm_sync_devices`` G
  devices share statistics), λ(t) of Eq. 11 and τ of Eq. 12. The global batch
  is m × (number of devices).
* learning rate = ``base_learning_rate`` × m / ``lr_reference_batch_size``
  with m the per-device batch (``lr_batch_size='per_device'``, our reading of
  "0.1 * m/64"); set ``lr_batch_size='global'`` to scale by the global batch
  instead. With gradient accumulation (``grad_accum_steps`` = k) the batch
  that scales it is the optimizer's, m·k (or global·k): the batch whose mean
  gradient one update applies. Divided by 10 every ``lr_decay_epochs`` epochs (60 CIFAR, 30
  Mini-ImageNet).
* SGD, momentum 0.9, weight decay 1e-4 added to the gradient of every
  parameter (PyTorch's ``SGD(weight_decay=...)``, as the paper used).
* MBN: m0 = ``ideal_batch_size`` = 32, τ0 = 0.85; T of Eq. 11 is
  ``mbn_total_epochs`` (the paper: T = 180 for CIFAR, trained for 200
  epochs; λ stays at its final value after epoch T).

Resuming: a workdir remembers its config (``config.json``); rerunning with a
config that differs in a field the schema does not mark ``resume=True``
(cadence, logging, paths, devices and parallelism, precise statistics, the
convolution) is refused.

Every field — its type, default, help text, range and marks — is declared
once, in :mod:`train.config_schema`; ``python -m train --help`` lists them.
"""

from train import config_schema


def get_config():
  """Every field at its default (:func:`train.config_schema.default_config`)."""
  return config_schema.default_config()
