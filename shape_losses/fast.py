"""The fast engine: the same optimisation as ``optimize``'s autograd engine, with far less overhead.

``optimize(x, replace(config, engine="fast"))`` lands here. It keeps the autograd engine's
semantics - history values are each term's value *before* the step, snapshots every
``record_every`` steps, the callback may stop the run, a NaN raises ``NonFiniteLossError``
naming the term and the step, the clamp follows every step, the input is never modified - but
computes each step differently:

* **Closed-form gradients.** Every built-in term has a *fast form* that returns its value and
  adds ``weight * d(term)/d(latents)`` straight into one gradient buffer; no autograd graph is
  built or walked. The formulas are written next to each term below and tested against
  autograd (``tests/test_fast.py``). A term without a fast form (one you registered yourself)
  falls back to autograd for that term only, and its gradient is summed in.
* **Shared work.** ``|x|`` and its sum are computed once per step for sparsity, binary and
  magnitude; their gradients, all of the form ``a * x + b * sign(x)``, are collected as two
  coefficients and applied in two passes at the end of the step. The blurred soft mask of
  ``soft_object_size`` and ``soft_iou`` is computed once, both add their gradient with respect
  to it (per-image constants and a ``B x B`` mix of the masks), and the chain rule back to the
  pixels - one matrix product, one blur - runs once. ``binary01`` and ``soft_object_size``
  share the step's ``x > 0.5``.
* **No fresh memory per step.** Every full-size temporary lives in a buffer allocated once per
  run (two scratch slots shared by all terms). On a CPU a fresh 16 MB tensor costs page faults
  that take longer than the arithmetic, and the peak memory stays below the autograd graph's.
* **Fused Adam.** One kernel updates the pixels and both moment buffers - the kernel behind
  ``torch.optim.Adam(fused=True)``, called directly: on small images the optimizer object's
  own bookkeeping costs ten times the kernel.
* **Less dispatch.** On small images a step costs what its ops cost to *call*, not to
  compute, so it is written as few calls as possible: views (``x[1:]``, ``x[:-1]``, ...) and
  0-d constants are made once per run (on a CPU a view, or an op with a Python-number operand,
  costs about as much as a second small op); the blur and ``soft_perimeter`` work on images
  with a 1-pixel frame laid flat, so that a neighbour is a fixed distance away and every pass
  is one contiguous op (``soft_perimeter``'s differences in both directions are one op over
  two strided views); the per-image and ``B x B`` arithmetic of ``soft_object_size`` and
  ``soft_iou`` runs on NumPy arrays sharing the tensors' memory, written into buffers made once
  (``out=``), with as few operations as the formulas allow - on a small image every operation,
  tensor or NumPy, costs a few microseconds, so the count is what matters; and the step runs in
  ``torch.inference_mode`` (a fifth less per call). The default preset's 32x32 step is about 40
  tensor calls and 20 NumPy operations.
* **No per-step host synchronisation on accelerators.** On a CPU the scalar reductions come back
  as Python floats (free there, and scalar arithmetic in Python is far cheaper than tensor
  ops); on CUDA they stay 0-d tensors, the history stays on the device and is copied once at
  the end, and finiteness is checked every :data:`CHECK_EVERY` steps (every step when a
  callback is given), still naming the first bad term and step.

Results match the autograd engine to rounding; float32 runs drift apart slowly because a pixel
sitting on a tie of ``sign`` or ``max`` can go either way. So ``PRESETS['seed']`` keeps
``engine='autograd'`` to follow the seed's trajectory step for step.

Threads: on a CPU, a batch of at most :data:`SINGLE_THREAD_NUMEL` pixels runs on one torch
thread (the caller's setting is restored afterwards; a callback sees one thread); larger ones
use torch's setting. See ``benchmarks/RESULTS.md`` for what threads do on a busy 2-core machine.

Adding a fast form to your own term (``ws`` is the step's :class:`Workspace`)::

    from shape_losses.fast import fast_form

    @fast_form("my_term")            # after @register("my_term") def my_term(latents, *, strength=1.0)
    def _my_term(ws, weight, *, strength=1.0):
        ws.add_sign(weight * strength / ws.numel)   # gradient of strength * mean|x|
        return strength * ws.abs_sum() / ws.numel   # its value
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import losses  # noqa: F401  (the built-in terms must be registered before their fast forms)
from ._checks import check_latents
from .config import Config
from .optimize import Callback, NonFiniteLossError, Result, check_run_args, finish
from .registry import get_term, register_fast

Scalar = float | torch.Tensor
"""A term value or coefficient: a Python float on a CPU, a 0-d tensor on an accelerator."""

Accumulate = Callable[..., Scalar]
"""``accumulate(ws, weight, **params) -> value``: adds ``weight * grad`` into ``ws``, returns the value."""

CHECK_EVERY = 32
"""On accelerators (without a callback) the history is checked for NaN/inf every this many steps."""

_HOST_SCALARS_ON_CPU = True
"""Tests set this to False to run the accelerator code path (0-d tensors, device history) on a CPU."""

SINGLE_THREAD_NUMEL = 1 << 16
"""On a CPU, batches of up to this many pixels run on one torch thread (restored afterwards).

Their tensors are too small for intra-op parallelism to pay, yet some kernels still start a
parallel region (the fused Adam kernel splits from 2048 elements, matrix products go to MKL's
threads): on a 2-core machine shared with other jobs, waking the second thread made a 6x32x32
Adam step 12x slower (102 us against 8 us).
"""

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}

BLOCKED_GRAM_BATCH = 128
"""From this batch size on, the contrastive Gram matrix is built from 3 of its 4 blocks (it is symmetric)."""


# ---------------------------------------------------------------------------------------------
# Scalar helpers that work on Python floats and 0-d tensors alike
# ---------------------------------------------------------------------------------------------


def _relu(value: Scalar) -> Scalar:
    if isinstance(value, torch.Tensor):
        return value.clamp_min(0.0)
    return max(value, 0.0)  # NaN stays NaN, like torch.relu


def _step(value: Scalar) -> Scalar:
    """Heaviside step (1 where value > 0, else 0): relu's derivative, 0 at the kink like autograd."""
    if isinstance(value, torch.Tensor):
        return (value > 0).to(value.dtype)
    return 1.0 if value > 0 else 0.0


def _axpy(dst: torch.Tensor, src: torch.Tensor, alpha: Scalar) -> None:
    """``dst += alpha * src`` in place, for a float or a 0-d tensor ``alpha``."""
    if isinstance(alpha, torch.Tensor):
        dst.addcmul_(src, alpha)
    elif alpha != 0.0:
        dst.add_(src, alpha=alpha)


# ---------------------------------------------------------------------------------------------
# The workspace: buffers, per-step shared intermediates, gradient accumulation
# ---------------------------------------------------------------------------------------------


class Workspace:
    """Scratch memory, shared intermediates and the gradient of one run of the fast engine.

    ``x`` is the run's current images ``[B, H, W]`` (contiguous, updated in place by the loop).
    A fast form reads shared intermediates through the methods below (each computed at most
    once per step) and adds its weighted gradient either directly into :attr:`grad` or, for
    the common shapes ``c * x`` and ``c * sign(x)``, as a coefficient through :meth:`add_x` /
    :meth:`add_sign`; :meth:`gradient` applies the coefficients and returns the total.

    Memory: besides ``x`` and ``grad``, two image-size scratch slots (``"a"`` and ``"b"``,
    through :meth:`scratch`) shared by every term, and the named buffers that the terms in use
    ask for with :meth:`buffer` (``|x|``, a soft mask, ...): far less than an autograd graph.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.batch, self.height, self.width = x.shape
        self.numel = x.numel()
        self.host_scalars = x.device.type == "cpu" and _HOST_SCALARS_ON_CPU
        self.numpy_small = self.host_scalars and x.dtype in _NUMPY_DTYPES
        self.xp: Any = np if self.numpy_small else torch
        """The module for :meth:`small` arithmetic with ``out=``: ``numpy`` or ``torch`` (same names:
        ``add``, ``subtract``, ``multiply``, ``divide``)."""
        self.grad = torch.zeros_like(x)
        self.x_flat, self.grad_flat = x.view(-1), self.grad.view(-1)
        self._buffers: dict[Any, Any] = {}
        self._cache: dict[Any, Any] = {}
        self._coef_x: Scalar = 0.0
        self._coef_sign: Scalar = 0.0
        self._finishers: list[Callable[[], None]] = []

    # -- memory --------------------------------------------------------------------------------

    def buffer(
        self,
        name: Any,
        shape: tuple[int, ...] | None = None,
        dtype: torch.dtype | None = None,
        fill: float | None = None,
    ) -> torch.Tensor:
        """A tensor kept for the whole run (default: ``x``'s shape and dtype); one name, one purpose.

        Filled with ``fill`` when made (e.g. a frame that is never written), else uninitialised.
        """
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = torch.empty(
                self.x.shape if shape is None else shape,
                dtype=self.x.dtype if dtype is None else dtype,
                device=self.x.device,
            )
            if fill is not None:
                buf.fill_(fill)
        return buf

    def scratch(self, slot: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Scratch slot ``"a"`` or ``"b"`` viewed as ``shape`` (at most ``[B, H+2, W+2]``; default ``x``'s).

        Valid until the next use of the same slot: a fast form uses it and lets go. The
        workspace's own methods use the slots only inside :meth:`gradient`.
        """
        shape = self.x.shape if shape is None else shape
        key = ("scratch", slot, tuple(shape))
        view = self._buffers.get(key)
        if view is None:
            padded = self.batch * (self.height + 2) * (self.width + 2)  # room for a 1-pixel frame
            flat = self.buffer(("scratch", slot), (padded,))
            view = self._buffers[key] = flat[: math.prod(shape)].view(shape)
        return view

    def const(self, value: float) -> torch.Tensor:
        """``value`` as a 0-d tensor of ``x``'s dtype and device, made once per run."""
        key = ("const", value)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.tensor(value, dtype=self.x.dtype, device=self.x.device)
        return buf

    def scalar(self, value: torch.Tensor) -> Scalar:
        """A reduction's result: a float on a CPU (no cost there), else the 0-d tensor (no sync)."""
        if self.host_scalars:
            return value.item()
        return value.to(self.x.dtype)

    def above(self, threshold: float) -> torch.Tensor:
        """``1.0`` where ``x > threshold``, else ``0.0``, flat (``[B*H*W]``), for the step."""
        key = ("above", threshold)
        above = self._cache.get(key)
        if above is None:
            out = self.buffer(key, (self.numel,))
            above = self._cache[key] = torch.gt(self.x_flat, self.const(threshold), out=out)
        return above

    def per_run(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, memoised for the run under ``key``: buffers and views a term reuses every step."""
        value = self._buffers.get(key)
        if value is None:
            value = self._buffers[key] = make()
        return value

    def once(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, memoised for the current step under ``key``."""
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = compute()
            return value

    # -- the step ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a step: forget the cached intermediates, zero the gradient and the coefficients."""
        self._cache.clear()
        self._finishers.clear()
        self.grad.zero_()
        self._coef_x = 0.0
        self._coef_sign = 0.0

    def at_gradient(self, finisher: Callable[[], None]) -> None:
        """Run ``finisher()`` in :meth:`gradient`, before the coefficients: for gradients collected
        on an intermediate (a mask shared by several terms) and pushed to the pixels once."""
        self._finishers.append(finisher)

    def gradient(self) -> torch.Tensor:
        """The step's total gradient: what the terms added, plus the collected coefficient terms."""
        for finisher in self._finishers:
            finisher()
        self._finishers.clear()
        _axpy(self.grad, self.x, self._coef_x)
        if isinstance(self._coef_sign, torch.Tensor) or self._coef_sign != 0.0:
            sign = self._cache.get("sign")
            if sign is None:
                sign = torch.sign(self.x, out=self.scratch("a"))
            _axpy(self.grad, sign, self._coef_sign)
        return self.grad

    def add_x(self, coef: Scalar) -> None:
        """Add ``coef * x`` to the gradient (applied once, in :meth:`gradient`)."""
        self._coef_x = self._coef_x + coef

    def add_sign(self, coef: Scalar) -> None:
        """Add ``coef * sign(x)`` to the gradient (applied once, in :meth:`gradient`)."""
        self._coef_sign = self._coef_sign + coef

    # -- shared intermediates ------------------------------------------------------------------

    def sign(self) -> torch.Tensor:
        """``sign(x)`` for the step (0 at 0, like autograd's derivative of ``abs``)."""
        return self.once("sign", lambda: torch.sign(self.x, out=self.buffer("sign")))

    def abs(self) -> torch.Tensor:
        """``|x|`` for the step."""
        return self.once("abs", lambda: torch.abs(self.x, out=self.buffer("abs")))

    def abs_sum(self) -> Scalar:
        """``sum |x|`` for the step."""
        return self.once("abs_sum", lambda: self.scalar(self.abs().sum()))

    def diff_shape(self, dim: int) -> tuple[int, int, int]:
        """Shape of the neighbour differences along ``dim`` (1: rows, 2: columns)."""
        if dim == 1:
            return (self.batch, self.height - 1, self.width)
        return (self.batch, self.height, self.width - 1)

    def pairs(self, tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t[1:], t[:-1])`` along ``dim`` of a run-long tensor ``t`` (``x``, ``grad``, a buffer or a
        scratch view): each pixel and the neighbour before it, as views made once per run."""
        key = ("pairs", id(tensor), dim)
        entry = self._buffers.get(key)
        if entry is None or entry[0] is not tensor:
            size = tensor.shape[dim]
            after, before = tensor.narrow(dim, 1, size - 1), tensor.narrow(dim, 0, size - 1)
            entry = self._buffers[key] = (tensor, after, before)
        return entry[1], entry[2]

    def diff(self, tensor: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
        """Neighbour differences ``t[1:] - t[:-1]`` of ``t`` along ``dim``, into ``out``.

        For ``t = x`` these are the seed's ``dx`` (``dim=1``) and ``dy`` (``dim=2``).
        """
        after, before = self.pairs(tensor, dim)
        return torch.sub(after, before, out=out)

    def add_diff_transpose(
        self, u: torch.Tensor, dim: int, alpha: Scalar, into: torch.Tensor | None = None
    ) -> None:
        """Add ``alpha * D^T u`` to the gradient (or to ``into``), ``D`` the differences along ``dim``.

        ``D t = t[1:] - t[:-1]``, so ``D^T u`` adds ``u`` to the later pixel of each pair and
        subtracts it from the earlier one: the chain rule through :meth:`diff`.
        """
        after, before = self.pairs(self.grad if into is None else into, dim)
        _axpy(after, u, alpha)
        _axpy(before, u, -alpha)

    # -- the blurred soft mask of the fixed terms ------------------------------------------------

    def clipped(self) -> torch.Tensor:
        """``x`` clipped to ``losses.LEVELS`` (what ``losses._blur3`` blurs), for the step: written
        straight into the forward blur's input (a view)."""
        clipped = self._cache.get("clipped")
        if clipped is None:
            blur = self.blur("forward")
            blur.frame(self.x_flat).clamp_(*losses.LEVELS)
            clipped = self._cache["clipped"] = blur.inside
        return clipped

    def blur(self, name: str) -> _Blur:
        """The run's blur ``name`` (``"forward"``: its input is :meth:`clipped`; ``"adjoint"``)."""
        return self.per_run(("blur", name), lambda: _Blur(self, name))

    def blurred_mask(self, threshold: float, temperature: float) -> _BlurredMask:
        """``sigmoid((blur(x) - threshold) / temperature)`` (``losses._soft_mask`` of
        ``losses._blur3``: ``x`` clipped to the levels, then blurred), computed for the step at
        the first call and shared by ``soft_object_size`` and ``soft_iou`` at equal parameters.
        Terms read it as :attr:`_BlurredMask.rows` and add their gradient with respect to it
        with :meth:`_BlurredMask.add_rows` and :meth:`_BlurredMask.add_mix`."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        key = ("blurred_mask", threshold, temperature)
        mask = self._cache.get(key)
        if mask is None:
            mask = self._cache[key] = self.per_run(key, lambda: _BlurredMask(self, threshold, temperature))
            mask.compute()
        return mask

    # -- small per-image numbers -----------------------------------------------------------------

    def small(self, value: torch.Tensor) -> Any:
        """A small tensor (per-image numbers, a ``[B, B]`` matrix) to do arithmetic on: on a CPU
        as a NumPy array sharing its memory (an operation on six numbers costs a third of a
        tensor op there), elsewhere the tensor itself (no host synchronisation). Code written
        with operators, indexing, ``.sum(...)``, :meth:`at_least` and :attr:`xp`'s functions with
        ``out=`` works on both. Every operation still costs about what a tensor op on a small
        image costs, so the fixed terms write results into buffers made once (:meth:`small_buffer`)
        and use as few operations as they can."""
        if self.numpy_small:
            return value.numpy()
        return value

    def small_buffer(self, name: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, Any]:
        """A run buffer for small numbers and its :meth:`small` form (made once: a conversion
        costs as much as a small op). Write into the tensor, compute with the other."""
        return self.per_run(("small", name), lambda: (buffer := self.buffer(name, shape), self.small(buffer)))

    def pixel_share(self) -> torch.Tensor:
        """``H*W`` entries ``1 / (H*W)``: ``rows @ pixel_share`` is each image's mean (a row mean costs
        more as a reduction)."""
        pixels = self.height * self.width
        return self.per_run("pixel share", lambda: self.x.new_full((pixels,), 1.0 / pixels))

    def at_least(self, value: Any, floor: float) -> Any:
        """``max(value, floor)`` elementwise for what :meth:`small` gives."""
        if isinstance(value, torch.Tensor):
            return value.clamp_min(floor)
        return np.maximum(value, floor)

    def off_diagonal(self) -> Any:
        """``1 - eye(B)`` in :meth:`small`'s form, made once per run."""
        off = self._buffers.get("off_diagonal")
        if off is None:
            eye = torch.eye(self.batch, dtype=self.x.dtype, device=self.x.device)
            off = self._buffers["off_diagonal"] = self.small(1.0 - eye)
        return off


class _BlurredMask:
    """The blurred soft mask of one (threshold, temperature), with its buffers and views for the run.

    :meth:`compute` makes the step's mask; terms read :attr:`rows` (``[B, H*W]``) and
    :attr:`columns` (its transpose) and add their gradient with respect to it with
    :meth:`add_rows` and :meth:`add_mix`; the chain rule back to the pixels then runs once, in
    :meth:`Workspace.gradient`.

    The gradient with respect to the mask is kept as one ``[B, B + 1]`` matrix, ``[mix | rows]``,
    and the masks carry a last row of ones, so that ``mix @ masks + rows`` is one matrix product.
    """

    def __init__(self, ws: Workspace, threshold: float, temperature: float):
        self.ws = ws
        batch = ws.batch
        with_ones = ws.buffer(("blurred_mask", threshold, temperature), (batch + 1, ws.height * ws.width))
        with_ones[batch].fill_(1.0)
        self.rows_with_ones, self.rows = with_ones, with_ones[:batch]
        self.mask, self.columns = self.rows.view(ws.x.shape), self.rows.t()
        self.shift, self.scale = ws.const(-threshold / temperature), 1.0 / (16.0 * temperature)
        self.grad_mix = ws.buffer(("blurred_mask_grad", threshold, temperature), (batch, batch + 1))
        grad_mix_small = ws.small(self.grad_mix)
        self.d_mix, self.d_rows = grad_mix_small[:, :batch], grad_mix_small[:, batch]
        self.grad_mask = ws.scratch("b")
        self.grad_rows = self.grad_mask.view(batch, -1)
        self.slope, self.not_clipped = ws.scratch("a"), ws.scratch("b")
        self.grad_flat_mask, self.slope_flat = self.grad_mask.view(-1), self.slope.view(-1)
        self.forward, self.adjoint = ws.blur("forward"), ws.blur("adjoint")
        self._fresh = True
        self._rows_written = self._mix_written = False

    def compute(self) -> None:
        """The step's mask: clip, blur, then the sigmoid of ``(blur - threshold) / temperature``."""
        self.ws.clipped()
        torch.add(self.shift, self.forward.run(), alpha=self.scale, out=self.mask).sigmoid_()
        self._fresh = True

    def add_rows(self, values: Any, scale: float) -> None:
        """Add ``scale * values[b]`` on every pixel of image ``b`` to the gradient with respect to
        the mask (``values``: ``[B]``, a tensor or, on a CPU, what :meth:`Workspace.small` gave)."""
        if self._fresh:
            self._start_gradient()
        self._write_or_add(self.d_rows, values, scale, self._rows_written)
        self._rows_written = True

    def add_mix(self, values: Any, scale: float) -> None:
        """Add ``scale * values @ masks`` to the gradient with respect to the mask (``values``:
        ``[B, B]``, as for :meth:`add_rows`)."""
        if self._fresh:
            self._start_gradient()
        self._write_or_add(self.d_mix, values, scale, self._mix_written)
        self._mix_written = True

    def _write_or_add(self, into: Any, values: Any, scale: float, written: bool) -> None:
        """``into += scale * values``, or - for the step's first term to add - ``into = scale * values``
        (one operation, no zeroing)."""
        if written:
            into += values * scale
        else:
            self.ws.xp.multiply(values, scale, out=into)

    def _start_gradient(self) -> None:
        """The step's first gradient with respect to this mask: have the chain rule run once, in
        :meth:`Workspace.gradient`, for however many terms add to it."""
        self._fresh = self._rows_written = self._mix_written = False
        self.ws.at_gradient(self._chain_rule)

    def _chain_rule(self) -> None:
        """Push the mask's gradient to the pixels: ``m (1 - m) / temperature``, the blur's adjoint
        (the blur itself) and the clip's (0 outside the levels, 1 inside and on them, like
        autograd's ``clamp``)."""
        ws = self.ws
        if not self._rows_written:
            self.d_rows[...] = 0.0
        if not self._mix_written:
            self.d_mix[...] = 0.0
        torch.mm(self.grad_mix, self.rows_with_ones, out=self.grad_rows)
        torch.addcmul(self.mask, self.mask, self.mask, value=-1.0, out=self.slope)  # m (1 - m)
        self.adjoint.frame(self.grad_flat_mask.mul_(self.slope_flat))
        spread = self.adjoint.run()
        torch.eq(self.forward.inside, ws.x, out=self.not_clipped)  # the step's clipped x: 1.0 / 0.0
        ws.grad.addcmul_(spread, self.not_clipped, value=self.scale)


class _Blur:
    """``losses._blur3``'s blur times 16 - the 3x3 binomial kernel ([1, 2, 1] x [1, 2, 1]) with
    replicated edges - with its buffers and views made once per run.

    :meth:`run` copies an image ``[B, H, W]`` into a buffer with a 1-pixel frame that repeats the
    edge pixels (one gather with an index made once), then runs the two 1-D passes ``[1, 2, 1]``
    over the framed images laid flat - neighbours 1 element apart along rows, one framed row apart
    along columns - so every pass is over contiguous memory. Sums that wrap from one row to the
    next land on frame pixels only, which are never read. The blur is symmetric (replicating an
    edge gives the corner weights 3, on both sides of the diagonal), so it is its own adjoint.
    """

    def __init__(self, ws: Workspace, name: str):
        batch, height, width = ws.x.shape
        row = width + 2
        rows = torch.arange(-1, height + 1, device=ws.x.device).clamp_(0, height - 1)
        columns = torch.arange(-1, width + 1, device=ws.x.device).clamp_(0, width - 1)
        images = torch.arange(batch, device=ws.x.device) * (height * width)
        self.index = (images[:, None, None] + rows[None, :, None] * width + columns[None, None, :]).view(-1)
        self.padded = ws.buffer(("blur", name, "padded"), (batch, height + 2, row))
        self.padded_flat = flat = self.padded.view(-1)
        self.inside = self.padded[:, 1:-1, 1:-1]  # the input image, once :meth:`run` has copied it
        along = ws.buffer(("blur", name, "rows"), flat.shape, fill=0.0)
        out = ws.buffer(("blur", name, "out"), flat.shape, fill=0.0)
        self.along = (flat[:-2], flat[2:], along[1:-1], flat[1:-1])  # before, after, out, centre
        self.down = (along[: -2 * row], along[2 * row :], out[row:-row], along[row:-row])
        self.result = out.view(self.padded.shape)[:, 1:-1, 1:-1]

    def frame(self, image_flat: torch.Tensor) -> torch.Tensor:
        """Copy an image (``[B, H, W]`` laid flat) into the framed buffer, edges repeated; return that."""
        return torch.index_select(image_flat, 0, self.index, out=self.padded_flat)

    def run(self) -> torch.Tensor:
        """Blur the framed buffer's content (see :meth:`frame`); the result (times 16) is a view,
        valid until the next run."""
        for before, after, out, centre in (self.along, self.down):
            torch.add(before, after, out=out).add_(centre, alpha=2.0)
        return self.result


# ---------------------------------------------------------------------------------------------
# Registering fast forms
# ---------------------------------------------------------------------------------------------


def fast_form(name: str) -> Callable[[Accumulate], Accumulate]:
    """Decorator: attach ``accumulate(ws, weight, **params) -> value`` as term ``name``'s fast form.

    ``accumulate`` must add ``weight * d(value)/d(ws.x)`` to the workspace's gradient (it may
    skip that work when ``weight == 0``) and return the term's value. The registry gets the
    standalone form ``fast(latents, **params) -> (value, grad)`` (``Term.fast``), with
    ``accumulate`` reachable as its ``.accumulate`` attribute (what ``optimize_fast`` calls).
    """

    def decorate(accumulate: Accumulate) -> Accumulate:
        term = get_term(name)

        def value_and_grad(latents: torch.Tensor, **params: Any) -> tuple[torch.Tensor, torch.Tensor]:
            x = check_latents(latents).detach().contiguous()
            ws = Workspace(x)
            ws.begin()
            value = accumulate(ws, 1.0, **{**term.defaults, **params})
            return torch.as_tensor(value, dtype=x.dtype, device=x.device), ws.gradient()

        value_and_grad.__name__ = f"{name}_fast"
        value_and_grad.__doc__ = f"Value and closed-form gradient of ``{name}``: {accumulate.__doc__ or ''}"
        value_and_grad.accumulate = accumulate  # type: ignore[attr-defined]
        register_fast(name)(value_and_grad)
        return accumulate

    return decorate


# ---------------------------------------------------------------------------------------------
# Fast forms of the seed's terms (N: number of pixels, n: number of neighbour pairs)
# ---------------------------------------------------------------------------------------------


@fast_form("sparsity")
def _sparsity(ws: Workspace, weight: float) -> Scalar:
    """mean |x|; gradient sign(x) / N."""
    if weight:
        ws.add_sign(weight / ws.numel)
    return ws.abs_sum() / ws.numel


@fast_form("binary")
def _binary(ws: Workspace, weight: float) -> Scalar:
    """mean min((x-1)^2, (x+1)^2) = mean (|x|-1)^2; gradient 2(|x|-1) sign(x) / N = 2x/N - 2 sign(x)/N.

    At x = 0 both branches tie and autograd splits the gradient evenly (+2 and -2 cancel): 0,
    as is ``2x - 2 sign(x)`` there.
    """
    gap = torch.sub(ws.abs(), ws.const(1.0), out=ws.scratch("a"))
    value = ws.scalar(gap.square_().sum()) / ws.numel
    if weight:
        ws.add_x(2.0 * weight / ws.numel)
        ws.add_sign(-2.0 * weight / ws.numel)
    return value


@fast_form("tv")
def _tv(ws: Workspace, weight: float) -> Scalar:
    """mean |D_rows x| + mean |D_cols x|; gradient D^T sign(D x) / n for each direction."""
    value: Scalar = 0.0
    for dim in (1, 2):
        diff = ws.diff(ws.x, dim, out=ws.scratch("a", ws.diff_shape(dim)))
        count = diff.numel()
        if weight:
            sign = torch.sign(diff, out=ws.scratch("b", ws.diff_shape(dim)))
            ws.add_diff_transpose(sign, dim, weight / count)
        value = value + ws.scalar(diff.abs_().sum()) / count
    return value


@fast_form("object_size")
def _object_size(ws: Workspace, weight: float, *, threshold: float = 0.5, target: float = 0.2) -> Scalar:
    """(fraction of pixels > threshold - target)^2; its gradient is 0 everywhere (a hard threshold)."""
    bright = torch.gt(ws.x, ws.const(threshold), out=ws.scratch("a"))  # 1.0 / 0.0 in x's dtype
    ratio = ws.scalar(bright.sum()) / ws.numel
    return (ratio - target) ** 2


@fast_form("magnitude")
def _magnitude(ws: Workspace, weight: float, *, minimum: float = 0.3) -> Scalar:
    """relu(minimum - mean |x|); gradient -sign(x) / N while the mean is below the minimum."""
    gap = minimum - ws.abs_sum() / ws.numel
    if weight:
        ws.add_sign(-weight / ws.numel * _step(gap))
    return _relu(gap)


def _gram(ws: Workspace, flat: torch.Tensor, name: str = "gram") -> torch.Tensor:
    """``flat @ flat.T`` into run buffer ``name``; for a large batch, from 3 of its 4 blocks (symmetric)."""
    batch = flat.shape[0]
    gram = ws.buffer(name, (batch, batch))
    if batch < BLOCKED_GRAM_BATCH:
        return torch.mm(flat, flat.T, out=gram)
    half = batch // 2
    top, bottom = flat[:half], flat[half:]
    gram[:half, :half] = top @ top.T
    gram[half:, half:] = bottom @ bottom.T
    gram[:half, half:] = top @ bottom.T
    gram[half:, :half] = gram[:half, half:].T
    return gram


@fast_form("contrastive")
def _contrastive(ws: Workspace, weight: float) -> Scalar:
    """mean over pairs i != j of |cos(x_i, x_j)| (the diagonal counts as 0 in the mean over B^2).

    With the images as rows of ``X``, ``P = X X^T``, inverse norms
    ``v = 1 / max(sqrt(diag P), 1e-12)`` (``F.normalize``'s clamp) and cosines ``S = P v v^T``
    with a zeroed diagonal: value ``sum |S| / B^2``. Gradient ``(2 / B^2) M X`` with
    ``M = sign(S) v v^T - diag(v^2 sum_j |S_ij|)`` (the diagonal part only where the norm is
    above the clamp): one matrix product for ``P`` and one for the gradient, where autograd does
    three.
    """
    batch = ws.batch
    if batch < 2:
        return 0.0 if ws.host_scalars else ws.x.new_zeros(())
    flat = ws.x.view(batch, -1)
    cos = _gram(ws, flat)
    inv = torch.diagonal(cos).rsqrt().clamp_max_(1e12)  # 1 / max(norm, 1e-12)
    outer = torch.outer(inv, inv)
    cos.mul_(outer)
    torch.diagonal(cos).zero_()
    row_sums = cos.abs().sum(dim=1)
    value = ws.scalar(row_sums.sum()) / batch**2
    if weight:
        m = cos.sign_().mul_(outer)
        diag = row_sums.mul_(inv).mul_(inv)
        if not ws.host_scalars or inv.max().item() >= 1e12:  # at the clamp the norm gets no gradient
            diag.mul_(inv < 1e12)
        torch.diagonal(m).sub_(diag)
        ws.grad.view(batch, -1).addmm_(m, flat, alpha=2.0 * weight / batch**2)
    return value


@fast_form("autocorr")
def _autocorr(ws: Workspace, weight: float) -> Scalar:
    """-(mean of x_i x_j over row neighbours + the same over columns); gradient -(sum of neighbours) / n."""
    value: Scalar = 0.0
    for dim in (1, 2):
        after, before = ws.pairs(ws.x, dim)
        count = after.numel()
        products = torch.mul(after, before, out=ws.scratch("a", ws.diff_shape(dim)))
        value = value - ws.scalar(products.sum()) / count
        if weight:
            grad_after, grad_before = ws.pairs(ws.grad, dim)
            grad_after.add_(before, alpha=-weight / count)
            grad_before.add_(after, alpha=-weight / count)
    return value


@fast_form("perimeter")
def _perimeter(ws: Workspace, weight: float, *, threshold: float = 0.5, temperature: float = 0.1) -> Scalar:
    """E / A with s = sigmoid((x - t) / T), E = sum |D s| over both directions, A = sum s + 1e-6.

    Gradient: ``dL/ds = D^T sign(D s) / A - E / A^2``, then ``ds/dx = s (1 - s) / T``.
    """
    # (x - t) / T as x / T - t / T: one pass instead of two
    shift, scale = ws.const(-threshold / temperature), 1.0 / temperature
    s = torch.add(shift, ws.x, alpha=scale, out=ws.buffer("soft")).sigmoid_()
    edge: Scalar = 0.0
    signs = []
    for dim in (1, 2):
        d = ws.diff(s, dim, out=ws.scratch("a", ws.diff_shape(dim)))
        if weight:
            signs.append(torch.sign(d, out=ws.buffer(("soft_sign", dim), ws.diff_shape(dim))))
        edge = edge + ws.scalar(d.abs_().sum())
    area = ws.scalar(s.sum()) + 1e-6
    if weight:
        grad_s = ws.scratch("b").fill_(-edge / area**2)
        for dim, sign in zip((1, 2), signs, strict=True):
            ws.add_diff_transpose(sign, dim, 1.0 / area, into=grad_s)
        slope = torch.addcmul(s, s, s, value=-1.0, out=ws.scratch("a"))  # s (1 - s)
        ws.grad.addcmul_(grad_s, slope, value=weight / temperature)
    return edge / area


def _pool_residual(
    ws: Workspace, slot: str, opening: bool
) -> tuple[torch.Tensor, Callable[[torch.Tensor], None]]:
    """``x - closing(x)`` (or ``x - opening(x)``) with 3x3 pools, in scratch ``slot``, and a function
    adding the gradient of ``sum(residual * g)`` for a given ``g`` (``g`` is overwritten).

    With ``s = +1`` for the closing and ``-1`` for the opening, ``p = maxpool(s x)`` and
    ``q = maxpool(-p)``, the closing is ``-q`` and the opening ``q``: the residual is ``x + s q``
    and its gradient applied to ``g`` is ``g - P^T Q^T g``, where ``P^T`` and ``Q^T`` route a value
    back to the pixel that won its pooling window - the same winners, ties included, as autograd's.
    """
    x4 = ws.x.unsqueeze(1)
    pool = {"kernel_size": 3, "stride": 1, "padding": 1, "return_indices": True}
    pooled, first = F.max_pool2d(-x4 if opening else x4, **pool)
    neg_pooled = pooled.neg_()
    second_pooled, second = F.max_pool2d(neg_pooled, **pool)
    out = ws.scratch(slot, x4.shape)
    residual = torch.sub(x4, second_pooled, out=out) if opening else torch.add(x4, second_pooled, out=out)

    def add_gradient(g: torch.Tensor) -> None:
        backward = torch.ops.aten.max_pool2d_with_indices_backward
        ws.grad.add_(g.squeeze(1))
        routed = backward(g, neg_pooled, [3, 3], [1, 1], [1, 1], [1, 1], False, second)
        routed = backward(routed, x4, [3, 3], [1, 1], [1, 1], [1, 1], False, first)
        ws.grad.sub_(routed.squeeze(1))

    return residual, add_gradient


@fast_form("morphological")
def _morphological(ws: Workspace, weight: float) -> Scalar:
    """mean (x - closing(x))^2 with a 3x3 closing (max-pool, then min-pool); gradient through
    the pools' winners (see ``_pool_residual``)."""
    residual, add_gradient = _pool_residual(ws, "a", opening=False)
    value = ws.scalar(torch.mul(residual, residual, out=ws.scratch("b", residual.shape)).sum()) / ws.numel
    if weight:
        add_gradient(residual.mul_(2.0 * weight / ws.numel))
    return value


# ---------------------------------------------------------------------------------------------
# Fast forms of the fixed terms (issue 5)
# ---------------------------------------------------------------------------------------------


@fast_form("binary01")
def _binary01(ws: Workspace, weight: float, *, low: float = 0.0, high: float = 1.0) -> Scalar:
    """mean |x - nearest level|, the nearest level ``low + (high - low) [x > c]`` (c: the
    mid-point); gradient sign(x - nearest level) / N: 0 at the levels, and at the mid-point (a tie
    of probability 0, where autograd splits the gradient evenly: 0) towards the low level."""
    if not low < high:
        raise ValueError(f"binary01 needs low < high, got low={low}, high={high}")
    nearest_high = ws.above((low + high) / 2)  # 1.0 where the high level is the nearer
    offset = torch.add(ws.x_flat, nearest_high, alpha=low - high, out=ws.scratch("a", (ws.numel,)))
    if low:
        offset.sub_(ws.const(low))
    sign = torch.sign(offset, out=ws.scratch("b", (ws.numel,)))
    value = ws.scalar(torch.dot(offset, sign)) / ws.numel
    if weight:
        ws.grad_flat.add_(sign, alpha=weight / ws.numel)
    return value


@fast_form("soft_object_size")
def _soft_object_size(
    ws: Workspace,
    weight: float,
    *,
    threshold: float = 0.5,
    target: float = 0.2,
    temperature: float = 0.1,
    straight_through: bool = True,
) -> Scalar:
    """mean over images of (fraction_b - target)^2, the fraction soft (mean of the blurred mask)
    or, straight-through, hard (pixels > threshold) in value; gradient
    ``2 (fraction_b - target) / (B H W)`` on every mask pixel of image b."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be a fraction in [0, 1], got {target}")
    mask = ws.blurred_mask(threshold, temperature)
    if straight_through:
        above = ws.above(threshold)  # 1.0 / 0.0
        counted = ws.per_run(("above rows", threshold), lambda: above.view(ws.batch, -1))
    else:
        counted = mask.rows
    fractions_buffer, fractions, gap = ws.per_run("soft_object_size", lambda: _soft_object_size_buffers(ws))
    torch.mv(counted, ws.pixel_share(), out=fractions_buffer)  # a row mean, cheaper as a product
    ws.xp.subtract(fractions, target, out=gap)
    value = ws.scalar(ws.xp.dot(gap, gap)) / ws.batch
    if weight:
        mask.add_rows(gap, 2.0 * weight / ws.numel)
    return value


def _soft_object_size_buffers(ws: Workspace) -> tuple[torch.Tensor, Any, Any]:
    """``soft_object_size``'s per-image fractions (the tensor and its :meth:`Workspace.small` form)
    and gaps to the target, made once per run."""
    fractions, fractions_small = ws.small_buffer("soft_object_size_fractions", (ws.batch,))
    return fractions, fractions_small, ws.small_buffer("soft_object_size_gap", (ws.batch,))[1]


@fast_form("soft_iou")
def _soft_iou(ws: Workspace, weight: float, *, threshold: float = 0.5, temperature: float = 0.1) -> Scalar:
    """mean over pairs i != j of I_ij / U_ij, with masks m (blurred, soft), I = m m^T, areas a and
    U = a_i + a_j - I (clamped at 1e-12). With K = B (B - 1):
    ``dL/dI_ij = (1/U + I/U^2) / K`` and ``dL/da_i = -(2/K) sum_j I_ij / U_ij^2`` (off the diagonal;
    where the clamp holds U, only ``1/U`` and no area term), so ``dL/dm = 2 (dL/dI) m + dL/da``:
    one matrix product for I and one, shared, for the gradient. The B x B arithmetic runs on
    :meth:`Workspace.small` arrays."""
    batch = ws.batch
    mask = ws.blurred_mask(threshold, temperature)  # checks the temperature, even for a batch of one
    if batch < 2:
        return 0.0 if ws.host_scalars else ws.x.new_zeros(())
    products, small = ws.small_buffer("soft_iou_products", (batch + 1, batch))
    if batch < BLOCKED_GRAM_BATCH:  # I and, from the row of ones under the masks, the areas
        torch.mm(mask.rows_with_ones, mask.columns, out=products)
    else:
        products[:batch] = _gram(ws, mask.rows, "soft_iou_inter")
        torch.sum(mask.rows, 1, out=products[batch])
    inter, area, area_column, union, share, iou, iou_flat, ones, q, d_inter = ws.per_run(
        "soft_iou", lambda: _soft_iou_views(ws, small)
    )
    xp = ws.xp
    xp.subtract(xp.add(area_column, area, out=union), inter, out=union)  # U_ij = a_i + a_j - I_ij
    # On a CPU, check whether the clamp holds anywhere (almost never: the masks are sigmoids); on an
    # accelerator always take the general form rather than wait for the answer.
    clamped = not ws.host_scalars or bool(union.min() < 1e-12)
    if clamped:
        free = union >= 1e-12  # where the clamp does not hold the union
        union = ws.at_least(union, 1e-12)
    xp.divide(ws.off_diagonal(), union, out=share)  # 1 / U off the diagonal
    xp.multiply(inter, share, out=iou)
    pairs = batch * (batch - 1)
    value = ws.scalar(xp.dot(iou_flat, ones)) / pairs  # a dot product costs less than a sum here
    if weight:
        xp.multiply(iou, share, out=q)  # I / U^2
        if clamped:
            q *= free  # where the clamp holds, U does not move with I and the areas
        scale = 2.0 * weight / pairs
        mask.add_mix(xp.add(share, q, out=d_inter), scale)  # 1/U + I/U^2
        mask.add_rows(q.sum(1), -scale)
    return value


def _soft_iou_views(ws: Workspace, products: Any) -> tuple[Any, ...]:
    """``soft_iou``'s views of its products (intersections, areas as a row and as a column) and
    its ``B x B`` buffers, in :meth:`Workspace.small`'s form, made once per run."""
    batch = ws.batch
    inter, area = products[:batch], products[batch]
    names = ("union", "share", "iou", "q", "d_inter")
    union, share, iou, q, d_inter = (ws.small_buffer(f"soft_iou_{name}", (batch, batch))[1] for name in names)
    ones = ws.small(ws.buffer("soft_iou_ones", (batch * batch,), fill=1.0))
    return inter, area, area[:, None], union, share, iou, iou.reshape(-1), ones, q, d_inter


@fast_form("soft_perimeter")
def _soft_perimeter(
    ws: Workspace, weight: float, *, threshold: float = 0.5, temperature: float = 0.1
) -> Scalar:
    """(sum |D s| over both directions) / (B H W), s = sigmoid((x - t) / T) framed by a 1-pixel
    border of 0; gradient ``D^T sign(D s) / (B H W)`` on the framed mask, cropped, times
    ``s (1 - s) / T``. Every pass is over contiguous memory (see :class:`_FramedViews`)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    v = ws.per_run("soft_perimeter", lambda: _FramedViews(ws))
    torch.add(ws.const(-threshold / temperature), ws.x, alpha=1.0 / temperature, out=v.pre_inside)
    torch.sigmoid(v.pre, out=v.soft_framed)
    torch.sub(v.soft_after, v.soft_before, out=v.diffs)  # along rows and down columns, in one op
    if not weight:
        return ws.scalar(v.diffs_flat.abs_().sum()) / ws.numel
    torch.sign(v.diffs_flat, out=v.signs_flat)
    value = ws.scalar(torch.dot(v.diffs_flat, v.signs_flat)) / ws.numel
    # D^T signs: at each pixel, the signs of its pairs as the later pixel minus those as the earlier
    torch.sub(v.signs_before, v.signs_after, out=v.sign_gaps)
    torch.add(v.sign_gaps_rows, v.sign_gaps_columns, out=v.grad_span)
    torch.addcmul(v.soft_span, v.soft_span, v.soft_span, value=-1.0, out=v.slope_span)  # s (1 - s)
    ws.grad.addcmul_(v.grad_inside, v.slope_inside, value=weight / (ws.numel * temperature))
    return value


class _FramedViews:
    """Buffers and views of ``soft_perimeter``, made once per run (a view costs as much as a small op).

    The framed masks are laid end to end as one flat array ``s`` (frame pre-activation -inf, so
    the sigmoid gives the frame's 0s): a neighbour along a row is 1 element away, along a column
    one framed row (``r`` elements) away, and the pairs that wrap from one row (or image) to the
    next join two frame 0s - difference 0, no edge, no gradient. With ``n = len(s) - r`` (the
    last framed row is all frame) the differences are one ``[2, n]`` array,
    ``s[k + 1] - s[k]`` over ``s[k + r] - s[k]``, made by one subtraction of two strided views
    of ``s`` (the second's rows start 1 and ``r`` elements in; the first's row repeats). The
    gradient is needed on the inside pixels only: the span from the second framed row to the one
    before last holds them all, and ``D^T`` of the signs there is one subtraction of two such
    views of the signs (into the differences' buffer) and one sum of its two rows.
    """

    def __init__(self, ws: Workspace):
        framed = (ws.batch, ws.height + 2, ws.width + 2)
        self.pre = ws.buffer("framed_pre", framed, fill=-math.inf)
        self.pre_inside = self.pre[:, 1:-1, 1:-1]
        self.soft_framed = ws.buffer("framed_soft", framed)
        soft = self.soft_framed.view(-1)
        size, row = soft.numel(), framed[2]
        n = size - row
        self.diffs = ws.buffer("framed_diffs", (2, n))
        self.signs = ws.buffer("framed_signs", (2, n))
        self.diffs_flat, self.signs_flat = self.diffs.view(-1), self.signs.view(-1)
        start = soft.storage_offset()
        self.soft_after = soft.as_strided((2, n), (row - 1, 1), start + 1)  # s[k + 1], s[k + r]
        self.soft_before = soft.as_strided((2, n), (0, 1), start)  # s[k], twice
        # pixel p in [first, last) is the later pixel of pairs p - 1 and p - r, the earlier of pair p
        first, last = row, size - row
        signs, start = self.signs_flat, self.signs_flat.storage_offset()
        span = last - first
        self.signs_before = signs.as_strided((2, span), (n - row + 1, 1), start + first - 1)
        self.signs_after = signs.as_strided((2, span), (n, 1), start + first)
        self.sign_gaps = self.diffs[:, :span]  # the differences are not needed by then
        self.sign_gaps_rows, self.sign_gaps_columns = self.sign_gaps[0], self.sign_gaps[1]
        grad = ws.buffer("framed_grad", (size,))
        self.grad_span, self.soft_span = grad[first:last], soft[first:last]
        slope = ws.buffer("framed_slope", (size,))
        self.slope_span, self.slope_inside = slope[first:last], slope.view(framed)[:, 1:-1, 1:-1]
        self.grad_inside = grad.view(framed)[:, 1:-1, 1:-1]


@fast_form("open_close")
def _open_close(ws: Workspace, weight: float) -> Scalar:
    """mean (x - closing(x))^2 + (x - opening(x))^2, 3x3 pools; gradient through the pools'
    winners (see ``_pool_residual``)."""
    value: Scalar = 0.0
    for opening in (False, True):
        residual, add_gradient = _pool_residual(ws, "a", opening=opening)
        value = value + ws.scalar(torch.mul(residual, residual, out=ws.scratch("b", residual.shape)).sum())
        if weight:
            add_gradient(residual.mul_(2.0 * weight / ws.numel))
    return value / ws.numel


# ---------------------------------------------------------------------------------------------
# The optimisation loop
# ---------------------------------------------------------------------------------------------


def _autograd_fallback(name: str) -> Accumulate:
    """Accumulate form of a term without a fast form: its own autograd, for this term only."""
    fn = get_term(name).fn

    def accumulate(ws: Workspace, weight: float, **params: Any) -> Scalar:
        if not weight:
            with torch.no_grad():
                return ws.scalar(torch.as_tensor(fn(ws.x, **params)))
        with torch.inference_mode(False), torch.enable_grad():  # optimize_fast's loop is in inference mode
            leaf = ws.x.detach().requires_grad_(True)
            value = fn(leaf, **params)
            if isinstance(value, torch.Tensor) and value.requires_grad:
                (grad,) = torch.autograd.grad(value, leaf)
                ws.grad.add_(grad, alpha=weight)
        return ws.scalar(torch.as_tensor(value).detach())

    return accumulate


def _standalone(name: str) -> Accumulate:
    """Accumulate form of a term whose fast form is only ``(value, grad)``."""
    fast = get_term(name).fast

    def accumulate(ws: Workspace, weight: float, **params: Any) -> Scalar:
        value, grad = fast(ws.x, **params)
        if weight:
            ws.grad.add_(grad, alpha=weight)
        return ws.scalar(torch.as_tensor(value).detach())

    return accumulate


def accumulator(name: str) -> Accumulate:
    """How the fast engine computes term ``name``: its fast form, else autograd for that term alone."""
    fast = get_term(name).fast
    if fast is None:
        return _autograd_fallback(name)
    return getattr(fast, "accumulate", None) or _standalone(name)


class _Adam:
    """Adam on one tensor with ``torch.optim.Adam``'s defaults (betas 0.9 / 0.999, eps 1e-8).

    Calls the fused kernel behind ``torch.optim.Adam(fused=True)`` directly: one pass over
    memory per step, without the optimizer object's per-step bookkeeping (about 80 us on a
    CPU, ten times the kernel on a 6x32x32 batch). Falls back to ``torch.optim.Adam`` where
    the kernel is missing (older torch, other devices or dtypes).
    """

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

    def __init__(self, param: torch.Tensor, grad: torch.Tensor, lr: float):
        self.param, self.grad, self.lr = param, grad, lr
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros((), dtype=torch.float32, device=param.device)
        self._one = torch.ones((), dtype=torch.float32, device=param.device)
        self._fused = getattr(torch, "_fused_adam_", None)
        if self._fused is not None:
            try:  # a step at lr 0 on a copy of one row: does this device / dtype have the kernel?
                rows = [t[:1].clone() for t in (param, grad, self.exp_avg, self.exp_avg_sq)]
                self._call([rows[0]], [rows[1]], [rows[2]], [rows[3]], [self._one.clone()], lr=0.0)
            except (RuntimeError, NotImplementedError):
                self._fused = None
        self._lists = ([param], [grad], [self.exp_avg], [self.exp_avg_sq], [self.steps])  # made once
        if self._fused is None:
            del self.exp_avg, self.exp_avg_sq
            param.grad = grad
            self._optimizer = torch.optim.Adam([param], lr=lr)

    def _call(self, params, grads, exp_avgs, exp_avg_sqs, steps, lr: float) -> None:
        self._fused(
            params, grads, exp_avgs, exp_avg_sqs, [], steps,
            lr=lr, beta1=self.BETA1, beta2=self.BETA2, weight_decay=0.0, eps=self.EPS,
            amsgrad=False, maximize=False,
        )

    def step(self) -> None:
        """One Adam update of ``param`` from ``grad`` (both updated in place / read in place)."""
        if self._fused is None:
            self._optimizer.step()
            return
        self.steps.add_(self._one)
        self._call(*self._lists, lr=self.lr)


@contextmanager
def _one_thread_if_small(x: torch.Tensor) -> Iterator[None]:
    """Run the block on one torch thread if ``x`` is a small CPU tensor (see :data:`SINGLE_THREAD_NUMEL`)."""
    threads = torch.get_num_threads()
    if x.device.type != "cpu" or x.numel() > SINGLE_THREAD_NUMEL or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _first_bad(values: torch.Tensor, names: list[str], offset: int) -> NonFiniteLossError | None:
    """The error for the first non-finite entry of ``values`` [steps, terms] (row 0 is step ``offset``)."""
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return None
    step, term = (int(i) for i in bad.nonzero()[0])
    return NonFiniteLossError(names[term], offset + step)


def optimize_fast(
    latents: torch.Tensor,
    config: Config,
    *,
    callback: Callback | None = None,
    record_every: int = 0,
) -> Result:
    """Run ``config`` from ``latents`` with the fast engine (whatever ``config.engine`` says).

    Same arguments, result and errors as :func:`shape_losses.optimize`, which calls this for
    ``config.engine == 'fast'``.
    """
    if config is None:
        raise TypeError("config must be a shape_losses.Config, got NoneType")
    check_run_args(latents, config, callback, record_every)

    start = time.perf_counter()
    active = config.active_terms()
    names = [name for name, _ in active]
    keys = names + ["total"]
    weights = [weight for _, weight in active]
    plan = [(accumulator(name), weight, config.term_params(name)) for name, weight in active]

    x = latents.detach().clone(memory_format=torch.contiguous_format)
    ws = Workspace(x)
    adam = _Adam(x, ws.grad, config.lr)
    host = ws.host_scalars
    rows: list[list[float]] = []  # CPU: the history as floats
    values_on_device = None if host else torch.empty(config.steps, len(names), dtype=x.dtype, device=x.device)
    weights_on_device = None if host else torch.tensor(weights, dtype=x.dtype, device=x.device)
    checked = 0  # accelerators: steps before this one are known to be finite
    frames, frame_steps = [], []
    if record_every:
        frames.append(x.detach().cpu().clone())
        frame_steps.append(0)

    steps_run = 0
    with _one_thread_if_small(x):  # see SINGLE_THREAD_NUMEL
        for step in range(config.steps):
            with torch.inference_mode():  # a fifth less dispatch per op (see the module's docstring)
                ws.begin()
                values = [accumulate(ws, weight, **params) for accumulate, weight, params in plan]
                ws.gradient()
                adam.step()
                if config.clamp is not None:
                    x.clamp_(*config.clamp)
                if not host and values:
                    values_on_device[step] = torch.stack(values)
            steps_run = step + 1

            if host:
                total = 0.0
                for value, weight in zip(values, weights, strict=True):
                    total += value * weight
                rows.append([*values, total])
                if not math.isfinite(total):  # a non-finite term makes the total non-finite
                    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), len(names))
                    raise NonFiniteLossError(keys[bad], step)
            else:
                if callback is not None or steps_run - checked >= CHECK_EVERY:
                    error = _first_bad(values_on_device[checked:steps_run], names, checked)
                    if error is not None:
                        raise error
                    checked = steps_run

            if record_every and steps_run % record_every == 0:
                frames.append(x.detach().cpu().clone())
                frame_steps.append(steps_run)
            if callback is not None:
                if host:
                    terms = dict(zip(keys, rows[-1], strict=True))
                else:
                    row = values_on_device[step]
                    terms = dict(zip(names, row.unbind(), strict=True))
                    terms["total"] = row @ weights_on_device
                if callback(steps_run, x, terms):
                    break

    if host:
        history = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(keys))
    else:
        error = _first_bad(values_on_device[checked:steps_run], names, checked)
        if error is not None:
            raise error
        done = values_on_device[:steps_run]
        history = torch.cat([done, (done @ weights_on_device)[:, None]], dim=1).to(torch.float64)
    return finish(x, history, names, frames, frame_steps, config, steps_run, record_every, start)
