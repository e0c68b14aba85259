"""Issue 15: gradient accumulation at 2 images per device, the CPU reproduction's setting.

``configs/cifar10_resnet20_cpu_accum.py:MODE`` with MODE ``sequential``
(default) or ``deferred``: the CPU reproduction (``configs/cifar10_resnet20_cpu.py``:
resnet20, 5,000 CIFAR-10 JPEG training images, validation = the last 500 per
class, the paper's schedule shape in 10 epochs — lr ÷10 after epochs 3, 6, 9,
MBN's T = 9 — precise statistics every epoch) with micro-batches of m = 2
images and one optimizer update per k = 16 of them: an optimizer batch of 32,
as BN at a true batch of 32 in the same sweep.

| | paper (CIFAR) | this experiment |
|---|---|---|
| epochs; lr ÷10 after; T | 200; 60, 120, 180; 180 | 10; 3, 6, 9; 9 |
| statistics batch m (λ, τ) | per-GPU batch | the micro-batch, 2 |
| optimizer batch; lr = 0.1·batch/64 | m | 2 × 16 = 32; 0.05 |
| optimizer steps per epoch | N/m | 156 (2,496 micro-batches) |

``sequential``: every micro-batch updates every statistic in order (λ and τ
for m = 2); ``deferred``: BN's and MBN's inference statistics move once per
optimizer step with the pooled moments of its 16 micro-batches (τ for
m·k = 32; BN by its momentum 0.9), MBN's training statistics still follow
Eq. 8 per micro-batch.

    python -m tools.sweep --config configs/cifar10_resnet20_cpu_accum.py:deferred \\
        --root workdirs/accum_deferred --norms bn,mbn --batch_sizes 2 --seeds 0,1,2
"""

from configs import cifar10_resnet20_cpu

MODES = ("sequential", "deferred")
MICRO_BATCHES = 16  # k: 16 micro-batches of 2 = an optimizer batch of 32


def get_config(mode: str = "sequential"):
  if mode not in MODES:
    raise ValueError(f"configs/cifar10_resnet20_cpu_accum.py takes one of {MODES}, got {mode!r}.")
  config = cifar10_resnet20_cpu.get_config()
  config.grad_accum_steps = MICRO_BATCHES
  config.grad_accum_stats = mode
  return config
