"""The mbn_jax training program: `python -m train --config configs/X.py --workdir DIR`."""
