"""Tools for finished runs of ``python -m train``: sweep, report, compare, re-evaluate, probe.

The training program (``train/``) trains and writes run records
(``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/``);
these tools run it many times or read what it wrote. Each is a program
(``python -m tools.<name>`` or the console script ``mbn-<name>``) and a
module of functions:

* :mod:`tools.sweep` — norm × per-device batch × seed through ``python -m
  train``, one process per run, resumable (``mbn-sweep``);
* :mod:`tools.report` — tables and plots of one sweep root (``mbn-report``);
* :mod:`tools.compare` — labelled arms of any sweep roots, paired by seed
  (``mbn-compare``);
* :mod:`tools.eval_stats` — re-evaluate finished runs with moving, precise
  and replayed statistics (``mbn-eval-stats``);
* :mod:`tools.noise_probe` — measured normalization noise of a trained
  network against :mod:`mbn_jax.noise` (``mbn-noise-probe``);
* :mod:`tools.finished_run` — load a finished run (config, layout, λ(t),
  data, model, checkpoint): what the analysis tools share.

docs/training.md "Tools for finished runs" has one runnable example of each.
"""
