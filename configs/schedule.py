"""The paper's schedule shape, scaled to any length (Sec. 5.3).

The paper trains CIFAR for 200 epochs, divides the learning rate by 10
after epochs 60, 120 and 180 (30 %, 60 % and 90 % of training) and ends the
ramp of MBN's λ (Eq. 11) at T = 180 (90 %). A shortened run keeps those
fractions: ``paper_shape(config, 10)`` divides after epochs 3, 6 and 9 and
sets T = 9. Any other schedule is an ablation and says so in its config.
"""

LR_DECAY_FRACTION = 0.3  # ÷10 after every 30 % of the epochs: 30 %, 60 %, 90 %.
LAMBDA_RAMP_FRACTION = 0.9  # T = 90 % of the epochs (180 of 200).


def paper_shape(config, num_epochs: int):
  """Sets ``num_epochs``, lr ÷10 after 30/60/90 % of them and MBN's T = 90 %.

  ``num_epochs`` must be a multiple of 10 so that every fraction is a whole
  epoch. Returns ``config``.
  """
  if (
    isinstance(num_epochs, bool)
    or not isinstance(num_epochs, int)
    or num_epochs <= 0
    or num_epochs % 10
  ):
    raise ValueError(
      f"paper_shape needs a positive multiple of 10 epochs (so 30/60/90 % are "
      f"whole epochs), got {num_epochs!r}."
    )
  config.num_epochs = num_epochs
  config.lr_decay_epochs = round(LR_DECAY_FRACTION * num_epochs)
  config.lr_decay_factor = 0.1
  config.mbn_total_epochs = round(LAMBDA_RAMP_FRACTION * num_epochs)
  return config
