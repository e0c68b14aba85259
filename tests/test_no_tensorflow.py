"""The training program and its input pipeline run where TensorFlow is not installed.

Each test runs a subprocess with ``tests/no_tensorflow`` on PYTHONPATH: its
``sitecustomize`` hides ``tensorflow`` from the import system and reports at
exit whether anything imported it.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDE = os.path.join(ROOT, "tests", "no_tensorflow")


def run_without_tensorflow(args, tmp_path, timeout=600):
  report = tmp_path / "tf_report"
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join([HIDE, ROOT]),
    NO_TF_REPORT=str(report),
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    JAX_PLATFORMS="cpu",
  )
  done = subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )
  return done, report.read_text() if report.exists() else "no report"


def test_tensorflow_is_really_hidden(tmp_path):
  done, report = run_without_tensorflow(
    [
      "-c",
      "import importlib.util; assert importlib.util.find_spec('tensorflow') is None\n"
      "try:\n  import tensorflow\nexcept ModuleNotFoundError:\n  print('hidden')",
    ],
    tmp_path,
  )
  assert done.returncode == 0 and done.stdout.strip() == "hidden", done.stderr
  assert report == "absent"


def test_every_source_reads_batches_without_tensorflow(tmp_path):
  script = textwrap.dedent(
    f"""
    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image
    from configs import default
    from train import input_pipeline as ip

    def batches(data):
      b = ip.TrainBatches(data, per_device_batch_size=2, local_devices=1, process_index=0,
                          process_count=1, seed=0, augment="crop_flip", pad=2)
      return [x["label"] for x in b.epoch(0)]

    root = {str(tmp_path / "imgs")!r}
    for c in ("a", "b"):
      import os; os.makedirs(f"{{root}}/train/{{c}}")
      for i in range(4):
        Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(f"{{root}}/train/{{c}}/{{i}}.jpg")
    dc = default.get_config().dataset
    dc.source, dc.root, dc.holdout_per_class, dc.eval_split = "image_folder", root, 1, ""
    for limit in (4.0, 0.0):
      dc.max_in_memory_gb = limit
      assert len(batches(ip.load_dataset(dc))) == 3
    dc = default.get_config().dataset
    dc.source, dc.name, dc.holdout_per_class, dc.eval_split = "digits", "digits", 36, ""
    assert len(batches(ip.load_dataset(dc))) == 718
    dc = default.get_config().dataset
    dc.source, dc.name, dc.data_dir, dc.check_download_host = "tfds", "cifar10", root, False
    with tfds.testing.mock_data(num_examples=8):
      for limit in (4.0, 0.0):
        dc.max_in_memory_gb = limit
        assert len(batches(ip.load_dataset(dc))) == 4
    print("ok")
    """
  )
  done, report = run_without_tensorflow(["-c", script], tmp_path)
  assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
  assert report == "absent"


def test_the_quickstart_runs_without_tensorflow(tmp_path):
  done, report = run_without_tensorflow(
    [
      "-m",
      "train",
      "--config",
      "configs/quickstart.py",
      "--workdir",
      str(tmp_path / "qs"),
      "--config.num_epochs=1",
      "--config.norms=bn",
      "--config.dataset.max_train_examples=200",
    ],
    tmp_path,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "tiny_cnn on digits" in done.stdout
  assert report == "absent"
