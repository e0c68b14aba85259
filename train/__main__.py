"""`python -m train --config configs/<experiment>.py --workdir DIR [--config.FIELD=VALUE ...]`.

`python -m train --help` lists these flags and every config field (its default
and meaning, read from configs/default.py); add `--print_config` to a command
to print its resolved config (file plus overrides) as JSON without running.

Exit status: 0 when the run completed or was interrupted by a signal (rerun to
resume), 2 for bad input or a full disk (one line ``error: ...`` and nothing
else), 3 when training diverged (``config.max_nonfinite_steps`` consecutive
non-finite steps, or a checkpoint that would hold non-finite values).

Multi-host: run the same command on every host with
``--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`` (or the
``config.distributed`` fields); every host feeds its own slice of each global
batch. On CPU hosts the collectives use gloo.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from train import cli

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "workdir",
  None,
  "Directory for checkpoints, metrics and the summary; rerun with the same workdir to resume.",
)
config_flags.DEFINE_config_file(
  "config",
  None,
  "Training configuration file, configs/<experiment>.py[:ARG]; override any of its fields "
  "with --config.FIELD=VALUE (the fields are listed below).",
  lock_config=True,
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_bool(
  "print_config",
  False,
  "Print the resolved config (the --config file plus its --config.FIELD overrides) as JSON "
  "and exit, without running; --workdir is then optional.",
)
# --config and --workdir are required: train.cli.parse_flags checks them (one `error:` line).


def _initialize_distributed(config):
  import jax

  dist = config.distributed
  address = FLAGS.coordinator_address or dist.coordinator_address
  num = FLAGS.num_processes if FLAGS.num_processes is not None else dist.num_processes
  pid = FLAGS.process_id if FLAGS.process_id is not None else dist.process_id
  if num is None or num <= 1:
    return
  if not address:
    raise app.UsageError("--num_processes > 1 needs --coordinator_address=HOST:PORT.")
  if not 0 <= pid < num:
    raise app.UsageError(f"--process_id must lie in [0, {num}), got {pid}.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)


def main(argv):
  del argv  # train.cli.parse_flags refused positional arguments
  if FLAGS.print_config:
    print(cli.config_text(FLAGS.config))
    return
  new_workdir = not os.path.lexists(os.path.expanduser(FLAGS.workdir))
  try:
    _run()
  except BaseException as e:  # a failed start leaves no empty workdir behind
    if new_workdir and not (isinstance(e, SystemExit) and not e.code):
      cli.remove_if_empty(FLAGS.workdir)
    raise


def _run():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
  try:
    _initialize_distributed(FLAGS.config)
  except app.UsageError as e:
    cli.fail(str(e))
  from train import checkpoints, init_from, input_pipeline
  from train import train as train_lib

  expected = (
    train_lib.ConfigMismatchError,
    init_from.InitFromError,
    input_pipeline.DatasetUnavailableError,
    input_pipeline.DataConfigError,
    checkpoints.CheckpointError,
  )
  try:  # Bad input: a clear message, before anything is read or compiled.
    layout = train_lib.validate_config(FLAGS.config, FLAGS.workdir)
  except (ValueError, TypeError, OSError, input_pipeline.DatasetUnavailableError) as e:
    cli.fail(cli.disk_full_message(e, FLAGS.workdir) or str(e))
  try:
    summary = train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir, layout)
  except checkpoints.NonFiniteStateError as e:  # never expected: the train step skips such updates
    _error(str(e), DIVERGED)
  except expected as e:
    cli.fail(str(e))
  except Exception as e:
    full = cli.disk_full_message(e, FLAGS.workdir)
    if full is None:
      raise
    cli.fail(full)
  if summary.get("status") == "diverged":  # a single run, or the comparison's last run
    runs = summary.get("runs", {"": summary})
    message = next(r.get("error") for r in runs.values() if r.get("status") == "diverged")
    _error(message, DIVERGED)


DIVERGED = 3  # the exit status of a diverged run


def _error(message: str, status: int):
  print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(status)


def run():
  """The ``mbn-train`` console script (``python -m train``)."""
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  run()
