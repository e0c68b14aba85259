"""ImageNet (ILSVRC-2012) × ResNet-50 at 4 images per device: `configs/imagenet_resnet50.py[:SOURCE]`.

The paper's largest experiment: ResNet-50 on 64 GPUs × 4 images, BN and
SyncBN against MBN. The arms, by override:

* MBN (the default): ``--config.norm=mbn``, statistics of the device's 4 images
  averaged over steps (m = 4, m0 = 32, τ0 = 0.85);
* BN: ``--config.norm=bn`` (statistics of each device's 4 images);
* SyncBN: ``--config.norm=bn --config.norm_sync_devices=-1`` (statistics of
  the whole global batch, every device).

Schedule: ``configs/schedule.paper_shape`` at 100 epochs (the paper's shape:
lr ÷10 after 30 %, 60 %, 90 % of training, i.e. epochs 30, 60, 90, and MBN's
λ ramp ending at T = 90), SGD momentum 0.9, weight decay 1e-4. The paper
gives its ImageNet run one sentence (Sec. 5.4: "ResNet50 with 64 GPUs and 4
batch size per GPU ... MBN outperforms BN by 2.5 %") and no learning rate;
its rule for the ImageNet family (Mini-ImageNet-100, Sec. 5: "0.1 · m/128
..., divide it by 10 every 30 epochs", 100 epochs) is used here, with m read
as everywhere in this project: the per-device batch (``lr_batch_size =
'per_device'``: 0.1 · 4/128 = 0.003125). ``--config.lr_batch_size=global``
reads m as the global batch instead (0.1 · 256/128 = 0.2 at 64 × 4), closer
to the usual ResNet-50 recipe (0.1 per 256 images); which reading the authors
used is not stated (docs/results/multi_device.md measures both at CPU scale).

Data (SOURCE):

* ``folder`` (default): an image folder ``DIR/train/<wnid>/<image>.JPEG`` and
  ``DIR/val/<wnid>/<image>.JPEG`` (1000 class folders each; the validation
  images sorted into class folders), ``--config.dataset.root=DIR``;
* ``tfds``: TFDS's prepared ``imagenet2012`` (splits ``train`` and
  ``validation``) in ``--config.dataset.data_dir=DIR``, prepared once with
  ``file_format=array_record`` (README: "ImageNet").

Every image is resized to 224 × 224 (aspect ratio not kept), then padded by
16 pixels, randomly cropped back to 224 × 224 and flipped (the program's
``crop_flip``; not the random-resized crop of the usual ImageNet recipe).
The decoded training set is about 190 GB, more than ``dataset.max_in_memory_gb``:
every process decodes its own share of each batch from the files, on every
core (Grain threads). Normalized with ImageNet's usual per-channel mean and
std, so nothing is computed from the data before training. The stem is the
ImageNet one (``input_variant='mini_imagenet'``: 7 × 7/2 conv, 3 × 3/2 max-pool).

On 16 hosts × 4 GPUs (docs/training.md "Multi-host"):

  python -m train --config configs/imagenet_resnet50.py --workdir gs://BUCKET/in1k_mbn \\
    --config.dataset.root=/data/imagenet --coordinator_address=HOST0:1234 \\
    --num_processes=16 --process_id=$RANK
"""

from configs import default, schedule

SOURCES = ("folder", "tfds")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config(source: str = "folder"):
  if source not in SOURCES:
    raise ValueError(f"configs/imagenet_resnet50.py takes one of {SOURCES}, got {source!r}.")
  config = default.get_config()
  config.model = "resnet50"
  config.input_variant = "mini_imagenet"  # the ImageNet stem
  config.norm = "mbn"
  config.per_device_batch_size = 4
  config.eval_per_device_batch_size = 50
  schedule.paper_shape(config, 100)  # lr ÷10 after epochs 30, 60, 90; T = 90
  config.base_learning_rate = 0.1  # the paper's Mini-ImageNet rule: 0.1 · m/128
  config.lr_batch_size = "per_device"  # m = the per-device batch (our reading; 'global': the other)
  config.lr_reference_batch_size = 128
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.ideal_batch_size = 32
  config.tau0 = 0.85
  dc = config.dataset
  dc.image_size = 224
  dc.augment = "crop_flip"
  dc.crop_padding = 16
  dc.mean, dc.std = IMAGENET_MEAN, IMAGENET_STD
  dc.holdout_per_class = 0
  dc.train_split = "train"
  if source == "folder":
    dc.source = "image_folder"
    dc.root = "imagenet"
    dc.eval_split = "val"
  else:
    dc.source = "tfds"
    dc.name = "imagenet2012"
    dc.eval_split = "validation"
    dc.download = False  # ImageNet is never downloaded by TFDS (manual_dir)
  return config
