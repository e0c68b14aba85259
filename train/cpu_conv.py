"""A faster convolution backward pass for XLA:CPU (the training program's ``config.conv``).

XLA:CPU computes the *weight* gradient of a convolution (the "backward
filter" convolution, where the batch axis becomes the contraction axis) well
below the speed it reaches at small batches once the batch grows: on the
2-core CPU of issue #6 the weight gradient of a 3×3, 64→64-channel conv on
32×32 images took 27 ms at batch 32 but 310 ms at batch 128 (11×, for 4× the
work), and 1×1 strided shortcut convs were 2-5× slower than one matmul.
This module provides a drop-in replacement for
:func:`jax.lax.conv_general_dilated` with a custom VJP that computes the
same gradients differently:

* the forward convolution and the input gradient are XLA's own (unchanged;
  ``input_grad_chunk_size`` optionally chunks the latter);
* the weight gradient is computed by one of (``weight_grad=``):

  - ``"auto"`` (the default): a conv with at most ``AUTO_MATMUL_MAX_ROWS``
    output rows (batch × output pixels; small batches, late stages) is
    computed entirely by :func:`matmul_conv` (forward, input and weight
    gradients as matrix products); otherwise 1×1 kernels → ``"taps"`` (one
    matmul), other kernels → ``"chunked"`` with a chunk of
    :func:`auto_chunk_size` examples (about 2 MiB of input per chunk, 8 to
    32 examples), or XLA's own when the batch is not larger than that chunk;
  - ``"chunked"``: XLA's own weight-gradient convolution applied to
    ``chunk_size`` examples at a time, unrolled (a ``lax.scan`` over the
    chunks measured 20-60× *slower*: a convolution in a loop body does not get
    XLA:CPU's fast kernel), summed in float32;
  - ``"taps"``: for each filter tap one matrix product ``x[window]ᵀ · g``
    contracting batch and output pixels;
  - ``"lax"``: XLA's own (then this is plain lax).

  Variants measured slower in every setting (im2col through
  ``conv_general_dilated_patches``, one stacked im2col matmul, ``lax.scan``
  chunking) were removed; docs/performance.md keeps their numbers.

All give the gradients of ``lax.conv_general_dilated`` up to float rounding
(``tests/test_cpu_conv.py``). Use it with Flax::

    from train import cpu_conv
    nn.Conv(..., conv_general_dilated=cpu_conv.conv_general_dilated)

or let :func:`auto_conv` decide (the fast path on CPU backends only).

Where it is used: the training program's default ``config.conv='auto'``
calls :func:`auto_conv`, i.e. this module on CPU and XLA's own convolution on
GPU/TPU. The library's layers never use it (their backward passes are
``jax.grad`` of plain JAX; the norms have no custom VJP), and
:func:`mbn_jax.models.create_model` uses XLA's convolution unless you pass
``conv_general_dilated=``. It has nothing to do with normalization, so it
lives with the training program, not in the library (any CPU user of Flax
convolutions can still import it from here). ``docs/performance.md`` has the
measurements behind these choices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
  "conv_general_dilated",
  "make_conv_general_dilated",
  "auto_conv",
  "WEIGHT_GRAD_METHODS",
  "DEFAULT_CHUNK_SIZE",
  "DEFAULT_MIN_BATCH",
  "auto_chunk_size",
  "matmul_conv",
]

WEIGHT_GRAD_METHODS = ("auto", "taps", "chunked", "lax")
DEFAULT_CHUNK_SIZE = 8
# "auto": bytes of the input per weight-gradient chunk, and the chunk bounds.
AUTO_CHUNK_BYTES = 2 * 1024 * 1024
AUTO_MIN_CHUNK = 8
AUTO_MAX_CHUNK = 32
# "auto": convs with at most this many output rows (batch × output pixels) are
# computed entirely as matrix products (matmul_conv), forward and backward.
AUTO_MATMUL_MAX_ROWS = 512
# auto_conv uses the fast path for batches at least this large (CPU only).
DEFAULT_MIN_BATCH = 1


def _norm_padding(padding, lhs_shape, rhs_shape, window_strides, lhs_dilation, rhs_dilation, dnums):
  """Explicit ((lo, hi), ...) padding for the spatial dims."""
  if isinstance(padding, str):
    lhs_perm, rhs_perm, _ = dnums
    in_sp = [lhs_shape[i] for i in lhs_perm[2:]]
    k_sp = [rhs_shape[i] for i in rhs_perm[2:]]
    if lhs_dilation is not None:
      in_sp = [(s - 1) * d + 1 if s else 0 for s, d in zip(in_sp, lhs_dilation)]
    if rhs_dilation is not None:
      k_sp = [(s - 1) * d + 1 for s, d in zip(k_sp, rhs_dilation)]
    return tuple(lax.padtype_to_pads(in_sp, k_sp, window_strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _weight_grad_lax(x, g, w_shape, w_dtype, conv):
  _, vjp = jax.vjp(lambda w: conv(x, w), jnp.zeros(w_shape, w_dtype))
  return vjp(g)[0]


def _weight_grad_chunked(x, g, w_shape, w_dtype, conv, lhs_b, out_b, chunk):
  """Σ over batch chunks of XLA's weight-gradient conv (one conv per chunk, unrolled), in f32.

  Unrolled on purpose: a ``lax.scan`` over the chunks measured 20-60× slower on
  XLA:CPU (a convolution inside a loop body does not get the fast kernel).
  """
  n = x.shape[lhs_b]
  acc = None
  for b0 in range(0, n, chunk):
    xc = lax.slice_in_dim(x, b0, min(b0 + chunk, n), axis=lhs_b)
    gc = lax.slice_in_dim(g, b0, min(b0 + chunk, n), axis=out_b)
    d = _weight_grad_lax(xc, gc, w_shape, w_dtype, conv).astype(jnp.float32)
    acc = d if acc is None else acc + d
  assert acc is not None  # n > 0
  return acc.astype(w_dtype)


def auto_chunk_size(example_bytes: int) -> int:
  """The "auto" weight-gradient chunk: the power of two nearest below
  AUTO_CHUNK_BYTES / example_bytes, clipped to [AUTO_MIN_CHUNK, AUTO_MAX_CHUNK].
  """
  c = max(1, AUTO_CHUNK_BYTES // max(int(example_bytes), 1))
  c = 1 << (int(c).bit_length() - 1)
  return int(min(max(c, AUTO_MIN_CHUNK), AUTO_MAX_CHUNK))


def _canonical(x, g, dnums):
  """x as N,C,spatial... and g as N,O,spatial... (transposes only if needed)."""
  lhs_perm, _, out_perm = dnums
  xt = x if tuple(lhs_perm) == tuple(range(x.ndim)) else jnp.transpose(x, lhs_perm)
  gt = g if tuple(out_perm) == tuple(range(g.ndim)) else jnp.transpose(g, out_perm)
  return xt, gt


def _to_rhs_layout(dw_oi_sp, rhs_perm):
  """dW given as O,I,spatial... -> the rhs layout described by rhs_perm."""
  # rhs_perm[j] = position in rhs of the j-th canonical dim (O, I, sp...).
  inv = tuple(int(i) for i in np.argsort(rhs_perm))
  return jnp.transpose(dw_oi_sp, inv)


def _channels_last_padded(x, g, w_shape, dnums, pads):
  """Channels-last views (N, sp..., C) of the input, padded, and of the output
  gradient; plus the kernel's and the output's spatial sizes."""
  lhs_perm, rhs_perm, out_perm = dnums
  x_cl = jnp.transpose(x, (lhs_perm[0],) + tuple(lhs_perm[2:]) + (lhs_perm[1],))
  g_cl = jnp.transpose(g, (out_perm[0],) + tuple(out_perm[2:]) + (out_perm[1],))
  k_sp = [w_shape[i] for i in rhs_perm[2:]]
  out_sp = g_cl.shape[1:-1]
  x_cl = jnp.pad(x_cl, [(0, 0)] + [(lo, hi) for lo, hi in pads] + [(0, 0)])
  return x_cl, g_cl, k_sp, out_sp


def _weight_grad_taps(x, g, w_shape, w_dtype, dnums, strides, pads, precision):
  """One x-windowᵀ·g matmul per filter tap, contracting batch and pixels.

  Channels-last layouts are used internally (the dot then contracts the
  leading axes of two row-major matrices).
  """
  rhs_perm = dnums[1]
  nsp = x.ndim - 2
  x_cl, g_cl, k_sp, out_sp = _channels_last_padded(x, g, w_shape, dnums, pads)
  acc_dtype = jnp.float32
  taps = []
  for tap in np.ndindex(*k_sp):
    start = [0] + list(tap) + [0]
    limit = (
      [x_cl.shape[0]]
      + [st + (o - 1) * s + 1 for st, o, s in zip(start[1:-1], out_sp, strides)]
      + [x_cl.shape[-1]]
    )
    win = lax.slice(x_cl, start, limit, [1] + list(strides) + [1])
    contract = (0,) + tuple(range(1, nsp + 1))
    d = lax.dot_general(
      win,
      g_cl,
      ((contract, contract), ((), ())),
      precision=precision,
      preferred_element_type=acc_dtype,
    )  # (C, O)
    taps.append(d)
  dw = jnp.stack(taps, 0).reshape(tuple(k_sp) + taps[0].shape)  # sp..., C, O
  # -> O, I, sp...
  dw = jnp.transpose(dw, (nsp + 1, nsp) + tuple(range(nsp)))
  return _to_rhs_layout(dw, rhs_perm).astype(w_dtype)


def make_conv_general_dilated(
  weight_grad: str = "auto",
  *,
  chunk_size: int = DEFAULT_CHUNK_SIZE,
  input_grad_chunk_size: int | None = None,
) -> Callable:
  """A ``lax.conv_general_dilated`` with a custom VJP for the weight gradient.

  Args:
    weight_grad: how the weight gradient is computed: ``"auto"``
      (default), ``"taps"``, ``"chunked"`` or ``"lax"`` (see the module
      docstring). ``"taps"`` needs ``feature_group_count == 1``, no
      lhs/rhs dilation and no negative padding; other convolutions fall back
      to ``"chunked"``. ``batch_group_count != 1`` always uses lax's VJP.
    chunk_size: examples per chunk for ``"chunked"`` ("auto" picks its own,
      :func:`auto_chunk_size`).
    input_grad_chunk_size: if set, the input gradient is computed by XLA in
      chunks of this many examples (unrolled); default: one call.

  Returns:
    A function with the signature of :func:`jax.lax.conv_general_dilated`.
  """
  if weight_grad not in WEIGHT_GRAD_METHODS:
    raise ValueError(f"weight_grad must be one of {WEIGHT_GRAD_METHODS}, got {weight_grad!r}.")
  if int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
  chunk_size = int(chunk_size)

  def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
  ):
    lhs = jnp.asarray(lhs)
    rhs = jnp.asarray(rhs)
    window_strides = tuple(int(s) for s in window_strides)
    lhs_dilation = None if lhs_dilation is None else tuple(int(d) for d in lhs_dilation)
    rhs_dilation = None if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    conv = functools.partial(
      lax.conv_general_dilated,
      window_strides=window_strides,
      padding=padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )
    if batch_group_count != 1 or weight_grad == "lax":
      return conv(lhs, rhs)
    dnums = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    pads = _norm_padding(
      padding, lhs.shape, rhs.shape, window_strides, lhs_dilation, rhs_dilation, dnums
    )
    dilated = any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
    method, chunk = _choose_method(
      weight_grad,
      chunk_size,
      lhs,
      rhs,
      dnums,
      pads,
      window_strides,
      grouped_or_dilated=feature_group_count != 1 or dilated,
      negative_pad=any(lo < 0 or hi < 0 for lo, hi in pads),
      matmul_ok=preferred_element_type is None,
    )
    if method == "matmul":
      return matmul_conv(
        lhs, rhs, window_strides, pads, dimension_numbers=dimension_numbers, precision=precision
      )
    if method == "lax":
      return conv(lhs, rhs)
    bwd = functools.partial(
      _conv_backward,
      conv=conv,
      dnums=dnums,
      method=method,
      chunk=chunk,
      window_strides=window_strides,
      pads=pads,
      precision=precision,
      input_grad_chunk_size=input_grad_chunk_size,
    )

    @jax.custom_vjp
    def f(x, w):
      return conv(x, w)

    f.defvjp(lambda x, w: (conv(x, w), (x, w)), bwd)
    return f(lhs, rhs)

  conv_general_dilated.__name__ = f"conv_general_dilated_{weight_grad}"
  conv_general_dilated.__doc__ = (
    f"lax.conv_general_dilated with weight gradient method {weight_grad!r}."
  )
  return conv_general_dilated


def _choose_method(
  weight_grad,
  chunk_size,
  lhs,
  rhs,
  dnums,
  pads,
  window_strides,
  *,
  grouped_or_dilated,
  negative_pad,
  matmul_ok,
):
  """``(method, chunk)``: how to compute this convolution and its weight gradient.

  ``method`` is ``'matmul'`` (the whole conv as one matrix product: "auto" on
  a small output), ``'taps'``, ``'chunked'`` or ``'lax'``. "taps" needs no
  feature groups, no dilation and no negative padding; otherwise "chunked".
  """
  n = lhs.shape[dnums.lhs_spec[0]]
  method, chunk = weight_grad, chunk_size
  if method == "auto":
    if not (grouped_or_dilated or negative_pad) and matmul_ok:
      out_sp = [
        (lhs.shape[i] + lo + hi - rhs.shape[j]) // s + 1
        for i, j, (lo, hi), s in zip(dnums.lhs_spec[2:], dnums.rhs_spec[2:], pads, window_strides)
      ]
      if n * int(np.prod(out_sp)) <= AUTO_MATMUL_MAX_ROWS:
        return "matmul", chunk
    if not grouped_or_dilated and all(rhs.shape[i] == 1 for i in dnums.rhs_spec[2:]):
      method = "taps"  # a 1×1 kernel: the weight gradient is one matmul.
    else:
      chunk = auto_chunk_size(lhs.size // max(n, 1) * lhs.dtype.itemsize)
      method = "lax" if n <= chunk else "chunked"
  if method == "taps" and (grouped_or_dilated or negative_pad):
    method = "chunked"
  return method, chunk


def _conv_backward(
  res, g, *, conv, dnums, method, chunk, window_strides, pads, precision, input_grad_chunk_size
):
  """The custom VJP's backward pass: XLA's input gradient, our weight gradient (``method``)."""
  x, w = res
  # input gradient: XLA's transposed convolution (optionally chunked).
  if input_grad_chunk_size and x.shape[dnums.lhs_spec[0]] > input_grad_chunk_size:
    dx = _input_grad_chunked(x, w, g, conv, dnums, input_grad_chunk_size)
  else:
    _, vjp_x = jax.vjp(lambda xx: conv(xx, w), x)
    dx = vjp_x(g)[0]
  if method == "taps":
    dw = _weight_grad_taps(x, g, w.shape, w.dtype, dnums, window_strides, pads, precision)
  else:
    dw = _weight_grad_chunked(
      x, g, w.shape, w.dtype, conv, dnums.lhs_spec[0], dnums.out_spec[0], chunk
    )
  return dx.astype(x.dtype), dw.astype(w.dtype)


def _input_grad_chunked(x, w, g, conv, dnums, chunk):
  """XLA's input gradient, ``chunk`` examples at a time (unrolled)."""
  lhs_b, out_b = dnums.lhs_spec[0], dnums.out_spec[0]
  n = x.shape[lhs_b]
  parts = []
  for b0 in range(0, n, chunk):
    xc = lax.slice_in_dim(x, b0, min(b0 + chunk, n), axis=lhs_b)
    gc = lax.slice_in_dim(g, b0, min(b0 + chunk, n), axis=out_b)
    _, vjp = jax.vjp(lambda xx: conv(xx, w), xc)
    parts.append(vjp(gc)[0])
  return jnp.concatenate(parts, axis=lhs_b)


#: The default fast convolution: ``lax.conv_general_dilated`` with the
#: ``"auto"`` weight gradient.
conv_general_dilated = make_conv_general_dilated("auto")


def auto_conv(
  batch_size: int | None = None,
  *,
  min_batch: int = DEFAULT_MIN_BATCH,
  backend: str | None = None,
  weight_grad: str = "auto",
  **kwargs: Any,
) -> Callable:
  """The convolution to use: the fast one on CPU backends, else lax's.

  Args:
    batch_size: the per-device batch size, if known; the fast path is used
      only when ``batch_size >= min_batch`` (None: assume it is).
    min_batch: the smallest batch for which the fast path is used.
    backend: the backend to decide for (default: ``jax.default_backend()``).
    weight_grad, kwargs: passed to :func:`make_conv_general_dilated`.

  Returns:
    this module's convolution on CPU where it wins, else
    :func:`jax.lax.conv_general_dilated` (GPU/TPU: XLA's own is used).
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return lax.conv_general_dilated
  if batch_size is not None and batch_size < min_batch:
    return lax.conv_general_dilated
  if weight_grad == "auto" and not kwargs:
    return conv_general_dilated
  return make_conv_general_dilated(weight_grad, **kwargs)


def matmul_conv(lhs, rhs, window_strides, padding, *, dimension_numbers=None, precision=None):
  """A convolution as one matrix product (im2col by slicing), plain jnp.

  ``y = concat_taps(x windows) @ W.reshape(kh·kw·I, O)``; JAX differentiates
  it into matrix products too (dW = patchesᵀ·g, dpatches = g·Wᵀ, then the
  windows are padded back and summed). Pays off for small spatial sizes
  (late ResNet stages), where XLA:CPU's convolution kernels are slow.
  Needs ``feature_group_count == 1`` and no dilation.
  """
  lhs = jnp.asarray(lhs)
  rhs = jnp.asarray(rhs)
  dnums = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  lhs_perm, rhs_perm, out_perm = dnums
  nsp = lhs.ndim - 2
  strides = tuple(int(s) for s in window_strides)
  pads = _norm_padding(padding, lhs.shape, rhs.shape, strides, None, None, dnums)
  x = jnp.transpose(lhs, (lhs_perm[0],) + tuple(lhs_perm[2:]) + (lhs_perm[1],))
  w = jnp.transpose(rhs, tuple(rhs_perm[2:]) + (rhs_perm[1], rhs_perm[0]))  # sp..., I, O
  k_sp = w.shape[:nsp]
  x = lax.pad(
    x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  )
  out_sp = [(x.shape[1 + i] - k_sp[i]) // strides[i] + 1 for i in range(nsp)]
  wins = []
  for tap in np.ndindex(*k_sp):
    start = [0] + list(tap) + [0]
    limit = (
      [x.shape[0]] + [t + (o - 1) * s + 1 for t, o, s in zip(tap, out_sp, strides)] + [x.shape[-1]]
    )
    wins.append(lax.slice(x, start, limit, [1] + list(strides) + [1]))
  patches = wins[0] if len(wins) == 1 else jnp.concatenate(wins, axis=-1)
  y = lax.dot_general(
    patches, w.reshape(-1, w.shape[-1]), (((nsp + 1,), (0,)), ((), ())), precision=precision
  )
  # y: N, sp..., O -> the output layout.
  inv = tuple(int(i) for i in np.argsort((out_perm[0],) + tuple(out_perm[2:]) + (out_perm[1],)))
  return jnp.transpose(y, inv)
