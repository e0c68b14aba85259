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
config that differs in any field outside ``train.validation.RESUME_MAY_CHANGE``
(cadence, logging, paths, devices and parallelism, precise statistics, the
convolution; the list is kept there only) is refused.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # Parameter initialization, data order and augmentation.

  # Model and normalization.
  config.model = "resnet18"  # mbn_jax.models names, or train/models.py tiny ones.
  config.input_variant = "cifar"  # 'cifar' (3x3 stem) or 'mini_imagenet'.
  config.norm = "mbn"  # bn, mbn, brn, gn, ln, in, none.
  # Comma-separated norms, e.g. 'bn,mbn': trains one run per norm into
  # WORKDIR/<norm> and prints their accuracies side by side. '' = just `norm`.
  config.norms = ""
  # G: how many devices share one set of batch statistics (their statistics batch
  # is m·G, and λ, τ use m·G). 1: per device (the paper); -1: all devices (SyncBN);
  # any divisor of the device count: groups of G consecutive devices.
  config.norm_sync_devices = 1
  # Replaced by norm_sync_devices; still read (True: norm_sync_devices=-1, with a note).
  config.sync_batch_stats = ml_collections.config_dict.placeholder(bool)
  # > 0: refuse to start unless JAX sees exactly this many devices (an experiment
  # whose meaning depends on the device count; on CPU set
  # XLA_FLAGS=--xla_force_host_platform_device_count=N). 0: any count.
  config.required_devices = 0
  config.dtype = "float32"  # Computation dtype of the model: float32, bfloat16 or float16.
  # Convolutions: 'auto' = train.cpu_conv on CPU (faster there, same gradients
  # to rounding; docs/performance.md), XLA's on GPU/TPU; 'xla'; 'fast' (any backend).
  config.conv = "auto"

  # Fine-tuning (docs/training.md): start from a finished run's network.
  config.init_from = ""  # The finished run's workdir; '' = from scratch.
  # Re-initialize the classifier head even when the number of classes matches the source's.
  config.init_from_reset_head = False

  # Norm options (one dict for every norm; each ignores what it doesn't use).
  config.mbn_total_epochs = 180  # T of Eq. 11.
  config.ideal_batch_size = 32  # m0 of Eqs. 11-12.
  config.tau0 = 0.85  # τ0 of Eq. 12.
  # MBN's λ: True = Eq. 11's ramp from 0; False = 1 - m/m0 from the first step (fine-tuning).
  config.mbn_lambda_ramp = True
  config.bn_momentum = 0.9  # BN / BRN running-average momentum (weight on the old value).
  config.r_max = 1.5  # Batch Renorm (paper's Mini-ImageNet best: r_max 1.5, d_max 0.5).
  config.d_max = 0.5  # Batch Renorm: the bound of its mean correction d.
  config.brn_warmup_steps = 0  # Batch Renorm: ramp (1, 0) -> (r_max, d_max) over k steps; 0: none.
  # MABN: K iterations averaged; 0: m0/m (ideal_batch_size / per-device batch, at least 1).
  config.mabn_buffer_size = 0
  config.mabn_momentum = 0.98  # MABN: running_var momentum (weight on the old value).
  config.mabn_warmup_iters = 100  # MABN: iterations that normalize with the current statistics.
  config.mabn_r_clip = 5.0  # MABN: r is clipped to [1/r_clip, r_clip].
  config.mabn_r_clip_start = 1000  # MABN: r is 1 for max(this, warm-up) iterations.
  config.frozen_bn_train_affine = False  # FrozenBN: train gamma/beta (True) or freeze them.
  # Centre every conv kernel per output channel (MABN's CenConv2d); any norm.
  config.centered_weights = False

  # Batch and optimizer.
  config.per_device_batch_size = 2  # The paper's m.
  config.global_batch_size = -1  # > 0: derive m = global / devices (must divide).
  config.eval_per_device_batch_size = 100  # Images per device per evaluation batch.
  config.num_epochs = 200  # Training epochs (may grow on resume).
  config.base_learning_rate = 0.1  # lr = base_learning_rate x batch / lr_reference_batch_size.
  config.lr_reference_batch_size = 64  # The 64 of the paper's 0.1 * m/64.
  config.lr_batch_size = "per_device"  # 'per_device' (paper's m) or 'global'.
  config.lr_decay_epochs = 60  # Multiply the lr by lr_decay_factor every this many epochs.
  config.lr_decay_factor = 0.1  # The staircase decay's factor.
  config.momentum = 0.9  # SGD momentum.
  config.nesterov = False  # True: Nesterov momentum.
  config.weight_decay = 1e-4  # Added to the gradient of every parameter (PyTorch SGD's).
  # Gradient accumulation. k > 1: every optimizer update averages the gradients of
  # k micro-batches of per_device_batch_size images per device (optax.MultiSteps,
  # one jitted call per micro-batch). The norms' statistics batch stays the
  # micro-batch (λ and τ use its m); the learning rate scales with the optimizer
  # batch m·k; λ(t), the learning-rate schedule and steps_per_epoch count optimizer
  # steps. grad_accum_stats: 'sequential' (every micro-batch updates every
  # statistic, in order) or 'deferred' (bn and mbn: the inference statistics move
  # once per optimizer step with the pooled moments of the k micro-batches, τ for
  # m·k; torchgpipe's DeferredBatchNorm). docs/training.md "Gradient accumulation".
  config.grad_accum_steps = 1
  config.grad_accum_stats = "sequential"  # 'sequential' or 'deferred' (above).

  # Data.
  config.dataset = ml_collections.ConfigDict()
  config.dataset.source = "tfds"  # 'tfds', 'image_folder' or 'digits'.
  config.dataset.name = "cifar10"  # TFDS name (source='tfds').
  # TFDS data_dir; None: TFDS's default.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.download = True  # TFDS may try to download when not prepared.
  # Before a TFDS download, check that its host answers and fail at once if not
  # (TFDS itself retries for minutes offline). Off only for mocked TFDS (tests).
  config.dataset.check_download_host = True
  config.dataset.root = ml_collections.config_dict.placeholder(str)  # image_folder root.
  config.dataset.train_split = "train"  # Split to train on (TFDS slicing such as train[:90%]).
  config.dataset.eval_split = "test"  # Split to evaluate on (unless holdout_per_class > 0).
  config.dataset.holdout_per_class = 0  # > 0: eval = last k per class of train_split.
  config.dataset.image_size = ml_collections.config_dict.placeholder(int)  # resize to s x s.
  config.dataset.augment = "crop_flip"  # 'crop_flip', 'flip' or 'none'.
  config.dataset.crop_padding = 4  # Pixels of padding before the random crop.
  config.dataset.mean = ml_collections.config_dict.placeholder(tuple)  # None: from train set.
  config.dataset.std = ml_collections.config_dict.placeholder(tuple)  # None: from train set.
  # Train on the first k training images only; None: all.
  config.dataset.max_train_examples = ml_collections.config_dict.placeholder(int)
  # A directory for decoded images (.npy), reused across runs; None: no cache.
  config.dataset.cache_dir = ml_collections.config_dict.placeholder(str)
  # > 0: train on the first k images of every class only (a class-balanced
  # subset; applied after holdout_per_class, before max_train_examples).
  config.dataset.train_per_class = ml_collections.config_dict.placeholder(int)
  # Evaluate on the first k evaluation images only; None: all.
  config.dataset.max_eval_examples = ml_collections.config_dict.placeholder(int)
  # Image folders: train and evaluate on these class folders only, comma-separated, labelled
  # 0, 1, ... in this order ('airplane,automobile'); '': every class, sorted.
  config.dataset.classes = ""
  # Image folders whose decoded pixels fit in this many GB are decoded once into memory; larger ones are decoded from their files as batches are read.
  config.dataset.max_in_memory_gb = 4.0

  # Population ("precise") inference statistics (mbn_jax.precise_batch_stats).
  # K > 0: after the last epoch (and at every evaluation if precise_stats_every_eval)
  # re-estimate every BN/MBN/BReN layer's mean/var from K training batches (with the
  # training augmentation) of precise_stats_batch_size images per device, evaluate with
  # them, and record eval_accuracy_precise beside eval_accuracy. 0: off (the paper's
  # protocol). The checkpoint keeps both the moving and the precise statistics.
  config.precise_stats_batches = 0
  config.precise_stats_batch_size = 256  # Images per device per precise-statistics batch.
  config.precise_stats_every_eval = False  # True: precise statistics at every evaluation too.

  # Divergence.
  # A step that would leave anything non-finite (its data, loss or gradient, or the
  # updated parameters or optimizer state) is skipped (nothing but the step counter
  # changes) and counted (nonfinite_steps in metrics.jsonl); exactly this many
  # consecutive skips stop the run: status "diverged", exit status 3.
  config.max_nonfinite_steps = 20

  # Logging, evaluation, checkpoints.
  config.log_every_steps = 50  # Progress-bar refresh (loss, accuracy, images/s) every k steps.
  config.eval_every_epochs = 1  # Evaluate every k epochs (and after the last).
  config.checkpoint_every_epochs = 1  # Checkpoint every k epochs (and at the end or a stop).
  config.keep_checkpoints = 2  # Newest checkpoints kept on disk.
  config.progress_bar = True  # False: one JSON line per epoch instead of a bar.
  config.tensorboard = True  # Write TensorBoard events into WORKDIR/tensorboard.
  # > 0: the run sends itself SIGTERM after this global step (tests of the
  # preemption path: checkpoint, stop, resume). -1: never.
  config.simulate_preemption_at_step = -1

  # Devices.
  # 'pmap' (jax.pmap over every device; the default) or 'mesh' (jax.jit over
  # jax.shard_map on a Mesh ('data', 'stats') of every device): the same run.
  config.parallelism = "pmap"

  # Multi-host (flags --coordinator_address/--num_processes/--process_id win).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ""  # host:port of process 0.
  config.distributed.num_processes = 1  # Processes (hosts) in the run.
  config.distributed.process_id = 0  # This process's index in [0, num_processes).
  return config
