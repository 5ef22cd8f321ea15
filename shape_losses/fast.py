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
  to it into one buffer, and the chain rule back to the pixels runs once.
* **No fresh memory per step.** Every full-size temporary lives in a buffer allocated once per
  run (two scratch slots shared by all terms). On a CPU a fresh 16 MB tensor costs page faults
  that take longer than the arithmetic, and the peak memory stays below the autograd graph's.
* **Fused Adam.** One kernel updates the pixels and both moment buffers - the kernel behind
  ``torch.optim.Adam(fused=True)``, called directly: on small images the optimizer object's
  own bookkeeping costs ten times the kernel.
* **Less dispatch.** Views (``x[1:]``, ``x[:-1]``, ...) and 0-d constants are made once per run;
  on a CPU an elementwise op with a Python-number operand costs about twice one with a 0-d
  tensor operand, which matters when a 32x32 step is 50 to 100 small ops.
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
        self.grad = torch.zeros_like(x)
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
        zeros: bool = False,
    ) -> torch.Tensor:
        """A tensor kept for the whole run (default: ``x``'s shape and dtype); one name, one purpose.

        Made with zeros if ``zeros`` (e.g. a frame that is never written), else uninitialised.
        """
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = (torch.zeros if zeros else torch.empty)(
                self.x.shape if shape is None else shape,
                dtype=self.x.dtype if dtype is None else dtype,
                device=self.x.device,
            )
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

    def smooth(self, src: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
        """``out = S src``: the weights 1, 2, 1 along ``dim`` with replicated edges (unnormalised).

        ``S`` is a symmetric tridiagonal matrix (its corners are 3: the replicated neighbour),
        so it is its own adjoint. ``src`` and ``out`` must be run-long tensors (views are kept).
        """
        torch.add(src, src, out=out)
        out_after, out_before = self.pairs(out, dim)
        src_after, src_before = self.pairs(src, dim)
        out_after.add_(src_before)  # out[i] += src[i - 1]
        out_before.add_(src_after)  # out[i] += src[i + 1]
        first, last = self._edges(out, dim)
        src_first, src_last = self._edges(src, dim)
        first.add_(src_first)  # the replicated neighbour beyond each edge
        last.add_(src_last)
        return out

    def _edges(self, tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("edges", id(tensor), dim)
        entry = self._buffers.get(key)
        if entry is None or entry[0] is not tensor:
            size = tensor.shape[dim]
            entry = self._buffers[key] = (tensor, tensor.narrow(dim, 0, 1), tensor.narrow(dim, size - 1, 1))
        return entry[1], entry[2]

    def blur16(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = 16 blur(src)`` with ``losses._blur3``'s blur: the 3x3 binomial kernel
        ([1, 2, 1] x [1, 2, 1] / 16) with replicated edges, applied as its two 1-D passes
        (``S`` along rows, then columns). Unnormalised so that callers fold the 1/16 into their
        next operation. Symmetric, so it is also the blur's adjoint (times 16)."""
        rows = self.smooth(src, 1, out=self.buffer("blur_rows"))
        return self.smooth(rows, 2, out=out)

    def clipped(self) -> torch.Tensor:
        """``x`` clipped to ``losses.LEVELS`` (what ``losses._blur3`` blurs), for the step."""
        return self.once("clipped", lambda: torch.clamp(self.x, *losses.LEVELS, out=self.buffer("clipped")))

    def blurred_mask(self, threshold: float, temperature: float) -> torch.Tensor:
        """``sigmoid((blur(x) - threshold) / temperature)`` for the step (``losses._soft_mask`` of
        ``losses._blur3``: ``x`` clipped to the levels, then blurred), shared by
        ``soft_object_size`` and ``soft_iou`` at equal parameters."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        key = ("blurred_mask", threshold, temperature)

        def compute() -> torch.Tensor:
            mask = self.blur16(self.clipped(), out=self.buffer(key))
            shift, scale = self.const(-threshold / temperature), 1.0 / (16.0 * temperature)
            return torch.add(shift, mask, alpha=scale, out=mask).sigmoid_()

        return self.once(key, compute)

    def blurred_mask_grad(self, threshold: float, temperature: float) -> torch.Tensor:
        """A buffer, zeroed for the step, where terms add their gradient with respect to
        :meth:`blurred_mask`; the chain rule back to the pixels (``m (1 - m) / temperature``, the
        blur's adjoint - the blur itself - and the clip's: 0 outside the levels, 1 inside and on
        them, like autograd's ``clamp``) runs once for all of them, in :meth:`gradient`."""
        key = ("blurred_mask_grad", threshold, temperature)

        def compute() -> torch.Tensor:
            mask = self.blurred_mask(threshold, temperature)
            grad_mask = self.buffer(key).zero_()

            def finish() -> None:
                slope = torch.addcmul(mask, mask, mask, value=-1.0, out=self.scratch("a"))  # m (1 - m)
                spread = self.blur16(grad_mask.mul_(slope), out=self.scratch("a"))
                inside = torch.eq(self.clipped(), self.x, out=self.scratch("b"))  # 1.0 where not clipped
                self.grad.addcmul_(spread, inside, value=1.0 / (16.0 * temperature))

            self.at_gradient(finish)
            return grad_mask

        return self.once(key, compute)


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
    """mean min(|x - low|, |x - high|) = mean | |x - c| - h | (c, h: the levels' mid-point and
    half-gap); gradient sign(x - c) sign(|x - c| - h) / N, 0 at the mid-point (where autograd
    splits the tie evenly) and at the levels."""
    if not low < high:
        raise ValueError(f"binary01 needs low < high, got low={low}, high={high}")
    centred = torch.sub(ws.x, ws.const((low + high) / 2), out=ws.scratch("a"))
    gap = torch.abs(centred, out=ws.scratch("b")).sub_(ws.const((high - low) / 2))
    direction = centred.mul_(gap)  # its sign is the gradient's
    value = ws.scalar(gap.abs_().sum()) / ws.numel
    if weight:
        ws.grad.add_(direction.sign_(), alpha=weight / ws.numel)
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
    per_image = (ws.batch, -1)
    if straight_through:
        bright = torch.gt(ws.x, ws.const(threshold), out=ws.scratch("b"))
        fraction = bright.view(per_image).mean(dim=1)
    else:
        fraction = mask.view(per_image).mean(dim=1)
    gap = fraction - target
    value = ws.scalar(gap.square().mean())
    if weight:
        grad_mask = ws.blurred_mask_grad(threshold, temperature)
        scale = gap.mul_(2.0 * weight / ws.numel)
        grad_mask.view(per_image).add_(scale[:, None])
    return value


@fast_form("soft_iou")
def _soft_iou(ws: Workspace, weight: float, *, threshold: float = 0.5, temperature: float = 0.1) -> Scalar:
    """mean over pairs i != j of I_ij / U_ij, with masks m (blurred, soft), I = m m^T, areas a and
    U = a_i + a_j - I (clamped at 1e-12). With K = B (B - 1):
    ``dL/dI_ij = (1/U + I/U^2) / K`` and ``dL/da_i = -(2/K) sum_j I_ij / U_ij^2`` (off the diagonal,
    and 0 where the clamp holds U), so ``dL/dm = 2 (dL/dI) m + dL/da``: one matrix product for
    I and one for the gradient."""
    batch = ws.batch
    mask = ws.blurred_mask(threshold, temperature)  # checks the temperature, even for a batch of one
    if batch < 2:
        return 0.0 if ws.host_scalars else ws.x.new_zeros(())
    masks = mask.view(batch, -1)
    inter = _gram(ws, masks, "soft_iou_inter")
    area = masks.sum(dim=1)
    union = area[:, None] + area[None, :] - inter
    clamped = union < 1e-12
    union.clamp_min_(1e-12)
    iou = inter / union
    iou.fill_diagonal_(0.0)
    pairs = batch * (batch - 1)
    value = ws.scalar(iou.sum()) / pairs
    if weight:
        ratio = iou.div_(union)  # I / U^2 (0 on the diagonal)
        d_inter = union.reciprocal_().add_(ratio).fill_diagonal_(0.0)  # 1/U + I/U^2 off the diagonal
        ratio.masked_fill_(clamped, 0.0)
        d_area = ratio.sum(dim=1).mul_(-2.0)
        grad_mask = ws.blurred_mask_grad(threshold, temperature).view(batch, -1)
        grad_mask.addmm_(d_inter, masks, alpha=2.0 * weight / pairs)
        grad_mask.add_(d_area.mul_(weight / pairs)[:, None])
    return value


@fast_form("soft_perimeter")
def _soft_perimeter(
    ws: Workspace, weight: float, *, threshold: float = 0.5, temperature: float = 0.1
) -> Scalar:
    """(sum |D s| over both directions) / (B H W), s = sigmoid((x - t) / T) framed by a 1-pixel
    border of 0; gradient ``D^T sign(D s) / (B H W)`` on the framed mask, cropped, times
    ``s (1 - s) / T``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    framed = ws.buffer("framed_soft", (ws.batch, ws.height + 2, ws.width + 2), zeros=True)
    inside = framed[:, 1:-1, 1:-1]
    torch.add(ws.const(-threshold / temperature), ws.x, alpha=1.0 / temperature, out=inside)
    inside.sigmoid_()
    count = ws.numel
    if weight:
        grad_framed = ws.buffer("framed_soft_grad", framed.shape).zero_()
    edge: Scalar = 0.0
    for dim in (1, 2):
        shape = list(framed.shape)
        shape[dim] -= 1
        d = ws.diff(framed, dim, out=ws.scratch("a", tuple(shape)))
        if weight:
            sign = torch.sign(d, out=ws.scratch("b", tuple(shape)))
            ws.add_diff_transpose(sign, dim, weight / (count * temperature), into=grad_framed)
        edge = edge + ws.scalar(d.abs_().sum())
    if weight:
        slope = torch.addcmul(inside, inside, inside, value=-1.0, out=ws.scratch("a"))  # s (1 - s)
        ws.grad.addcmul_(grad_framed[:, 1:-1, 1:-1], slope)
    return edge / count


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
        leaf = ws.x.detach().requires_grad_(True)
        with torch.enable_grad():
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
        self._call([self.param], [self.grad], [self.exp_avg], [self.exp_avg_sq], [self.steps], lr=self.lr)


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
            ws.begin()
            values = [accumulate(ws, weight, **params) for accumulate, weight, params in plan]
            ws.gradient()
            adam.step()
            if config.clamp is not None:
                x.clamp_(*config.clamp)
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
                if values:
                    values_on_device[step] = torch.stack(values)
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
