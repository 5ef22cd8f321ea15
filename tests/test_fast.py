"""The fast engine: closed-form gradients equal autograd's, runs reach the same shapes, same semantics.

Gradients are compared in float64 on random inputs, where ties of ``sign``/``max`` (at which
a closed form and autograd may legitimately pick different subgradients) have probability 0.
Every semantic test runs twice: with the CPU's host scalars, and with the accelerator code
path (0-d tensors, history on the device, periodic finiteness checks) forced on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import shape_losses as sl
from shape_losses import fast
from shape_losses.registry import TERMS

BUILTIN = [name for name, term in TERMS.items() if term.fn.__module__ == "shape_losses.losses"]
WITH_FAST = [name for name, term in TERMS.items() if term.fast is not None]

# non-default parameters, to check that the fast forms read them (term -> params)
OTHER_PARAMS = {
    "object_size": {"threshold": 0.2, "target": 0.4},
    "magnitude": {"minimum": 0.9},
    "perimeter": {"threshold": 0.1, "temperature": 0.3},
    "binary01": {"low": -0.3, "high": 1.2},
    "soft_object_size": {"threshold": 0.3, "target": 0.35, "temperature": 0.2, "straight_through": False},
    "soft_iou": {"threshold": 0.2, "temperature": 0.25},
    "soft_perimeter": {"threshold": 0.3, "temperature": 0.2},
}

# parameters a term rejects: its fast form must reject them too (term -> params)
BAD_PARAMS = {
    "binary01": {"low": 1.0, "high": 0.0},
    "soft_object_size": {"target": 1.5},
    "soft_iou": {"temperature": 0.0},
    "soft_perimeter": {"temperature": -1.0},
}


def autograd_value_and_grad(fn, x: torch.Tensor, **params) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().clone().requires_grad_(True)
    value = fn(leaf, **params)
    if not value.requires_grad:  # e.g. object_size: no path to the pixels, gradient 0
        return value.detach(), torch.zeros_like(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal within ``rel`` of the gradient's largest entry (a relative test that tolerates zeros)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-12))


@pytest.fixture(params=[True, False], ids=["host-scalars", "device-path"])
def host_scalars(request, monkeypatch):
    """Run the test with the CPU path, then with the accelerator path forced on the CPU."""
    monkeypatch.setattr(fast, "_HOST_SCALARS_ON_CPU", request.param)
    return request.param


# -- closed-form gradients ----------------------------------------------------------------------


def test_every_builtin_term_has_a_fast_form():
    assert BUILTIN and set(BUILTIN) <= set(WITH_FAST)
    for name in BUILTIN:
        assert callable(getattr(TERMS[name].fast, "accumulate", None)), name


@pytest.mark.parametrize("name", WITH_FAST)
@pytest.mark.parametrize("shape, scale", [((4, 9, 7), 0.8), ((3, 12, 12), 0.15), ((1, 6, 5), 1.2)])
def test_fast_gradient_matches_autograd(name, shape, scale, rand):
    """Value and gradient of the fast form equal autograd's (float64, 1e-5 relative), at two
    scales (magnitude's hinge on and off) and for a batch of one (contrastive is then 0)."""
    term = TERMS[name]
    for seed in range(3):
        x = rand(shape, seed=seed, dtype=torch.float64, scale=scale)
        for params in [term.defaults, {**term.defaults, **OTHER_PARAMS.get(name, {})}]:
            expected_value, expected_grad = autograd_value_and_grad(term.fn, x, **params)
            value, grad = term.fast(x, **params)
            assert value.shape == () and grad.shape == x.shape and grad.dtype == x.dtype
            torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
            assert_grad_close(grad, expected_grad)


@pytest.mark.parametrize("name", WITH_FAST)
def test_fast_form_float32_close_to_autograd(name, rand):
    """In float32 the two differ by rounding only."""
    term = TERMS[name]
    x = rand((3, 16, 16), seed=5, scale=0.8)
    expected_value, expected_grad = autograd_value_and_grad(term.fn, x, **term.defaults)
    value, grad = term.fast(x)
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-6)
    assert_grad_close(grad, expected_grad, rel=1e-4)


@pytest.mark.parametrize("name", sorted(set(BAD_PARAMS) & set(WITH_FAST)))
def test_fast_form_rejects_what_the_term_rejects(name, rand):
    x = rand((2, 12, 12), seed=0)
    with pytest.raises(ValueError):
        TERMS[name].fn(x, **BAD_PARAMS[name])
    with pytest.raises(ValueError):
        TERMS[name].fast(x, **BAD_PARAMS[name])


@pytest.mark.parametrize("order", ["registry", "reversed"])
def test_fast_forms_are_independent_of_the_workspace_order(order, rand):
    """Shared intermediates and scratch slots: all terms in one workspace = each on its own, in
    either order (the first term to add to a shared gradient writes it, the others add)."""
    x = rand((3, 10, 11), seed=3, dtype=torch.float64, scale=0.9)
    ws = fast.Workspace(x.clone())
    ws.begin()
    names = WITH_FAST if order == "registry" else WITH_FAST[::-1]
    weights = {name: 0.5 + i for i, name in enumerate(names)}
    values = {name: fast.accumulator(name)(ws, w, **TERMS[name].defaults) for name, w in weights.items()}
    grad = ws.gradient()
    expected = torch.zeros_like(x)
    for name, w in weights.items():
        value, g = TERMS[name].fast(x)
        assert values[name] == pytest.approx(value.item(), rel=1e-12, abs=1e-14)
        expected += w * g
    assert_grad_close(grad, expected, rel=1e-12)


def total_autograd(config: sl.Config, x: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().clone().requires_grad_(True)
    total = sum(sl.get_term(n)(leaf, **config.term_params(n)) * w for n, w in config.active_terms())
    if not total.requires_grad:
        return torch.zeros_like(leaf)
    return torch.autograd.grad(total, leaf)[0]


def total_fast(config: sl.Config, x: torch.Tensor) -> torch.Tensor:
    ws = fast.Workspace(x.detach().clone())
    ws.begin()
    for name, weight in config.active_terms():
        fast.accumulator(name)(ws, weight, **config.term_params(name))
    return ws.gradient()


ALL_COHERENCES = [None, *sl.coherence_names()]


@pytest.mark.parametrize("preset", sorted(sl.PRESETS))
@pytest.mark.parametrize("coherence", ["preset", *ALL_COHERENCES])
def test_total_gradient_of_every_preset(preset, coherence, rand):
    """The weighted total of each preset (and with each coherence term) has autograd's gradient."""
    config = sl.PRESETS[preset]
    if coherence != "preset":
        config = replace(config, coherence=coherence)
    for seed in range(2):
        x = rand((5, 14, 13), seed=seed, dtype=torch.float64, scale=0.7)
        assert_grad_close(total_fast(config, x), total_autograd(config, x))


def test_every_term_at_once_with_a_fallback_term(rand, temp_term):
    """All weighted terms plus a registered term without a fast form (autograd for it alone)."""
    temp_term("_cubed", lambda latents, *, power=3.0: (latents.abs() ** power).mean())
    assert TERMS["_cubed"].fast is None
    weights = {name: 0.3 + 0.1 * i for i, name in enumerate(sl.weighted_term_names())}
    config = sl.Config(weights=weights, coherence="perimeter", params={"_cubed": {"power": 2.5}})
    x = rand((4, 12, 12), seed=9, dtype=torch.float64, scale=0.8)
    assert_grad_close(total_fast(config, x), total_autograd(config, x))


def test_a_standalone_value_and_grad_form_is_used(rand, temp_term):
    """A term given only ``register_fast`` (value, grad) - no accumulate form - works in the engine."""
    temp_term("_square", lambda latents: (latents**2).mean())
    calls = []

    @sl.registry.register_fast("_square")
    def _square_fast(latents):
        calls.append(1)
        return (latents**2).mean(), 2 * latents / latents.numel()

    x = rand((2, 12, 12), seed=1)
    config = sl.Config(weights={"_square": 1.0, "tv": 0.1}, coherence=None, steps=6, engine="fast")
    result = sl.optimize(x, config)
    reference = sl.optimize(x, replace(config, engine="autograd"))
    assert len(calls) == 6
    torch.testing.assert_close(result.latents, reference.latents, rtol=1e-5, atol=1e-6)


def test_fast_form_decorator_registers_accumulate(rand, temp_term):
    temp_term("_mean_abs", lambda latents, *, strength=1.0: strength * latents.abs().mean())

    @fast.fast_form("_mean_abs")
    def _mean_abs(ws, weight, *, strength=1.0):
        ws.add_sign(weight * strength / ws.numel)
        return strength * ws.abs_sum() / ws.numel

    assert TERMS["_mean_abs"].fast.accumulate is _mean_abs
    x = rand((2, 11, 11), seed=4, dtype=torch.float64)
    value, grad = TERMS["_mean_abs"].fast(x, strength=3.0)
    expected_value, expected_grad = autograd_value_and_grad(TERMS["_mean_abs"].fn, x, strength=3.0)
    torch.testing.assert_close(value, expected_value)
    assert_grad_close(grad, expected_grad)


def test_fast_form_checks_its_input():
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        TERMS["tv"].fast(torch.zeros(5, 5))


# -- the optimizer ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adam_equals_torch_adam(dtype, rand):
    x = rand((3, 8, 8), seed=0, dtype=dtype)
    grad = torch.zeros_like(x)
    ours = fast._Adam(x, grad, lr=0.03)
    reference = x.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([reference], lr=0.03)
    for step in range(5):
        g = rand((3, 8, 8), seed=100 + step, dtype=dtype)
        grad.copy_(g)
        ours.step()
        reference.grad = g.clone()
        optimizer.step()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(x, reference.detach(), rtol=tol, atol=tol)


def test_adam_falls_back_without_the_fused_kernel(rand, monkeypatch):
    """Where the fused kernel is missing, the engine uses torch.optim.Adam: the same run."""
    x = rand((2, 12, 12), seed=2)
    config = replace(sl.PRESETS["seed"], steps=8, engine="fast")
    fused = sl.optimize(x, config)
    monkeypatch.delattr(torch, "_fused_adam_")
    assert fast._Adam(x.clone(), torch.zeros_like(x), lr=0.1)._fused is None
    fallback = sl.optimize(x, config)
    torch.testing.assert_close(fallback.latents, fused.latents, rtol=1e-5, atol=1e-6)


# -- runs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("coherence", ALL_COHERENCES)
def test_float64_run_follows_autograd(coherence, host_scalars):
    """In float64 (no rounding ties) the fast run stays on the autograd run's trajectory."""
    x = sl.initialize_latents(4, (16, 16), seed=2, dtype=torch.float64)
    config = replace(sl.PRESETS["seed"], coherence=coherence, steps=60)
    ref = sl.optimize(x, config)
    got = sl.optimize(x, replace(config, engine="fast"))
    assert (got.latents - ref.latents).abs().max().item() < 1e-8
    for key in ref.history:
        torch.testing.assert_close(
            torch.tensor(got.history[key]), torch.tensor(ref.history[key]), rtol=1e-9, atol=1e-10
        )


@pytest.mark.parametrize("preset", sorted(set(sl.PRESETS) - {"seed"}))
def test_float64_preset_run_follows_autograd(preset, host_scalars):
    """The fixed terms' shared mask, its one-product gradient and the B x B arithmetic (NumPy on
    the host path, tensors on the device path) keep a float64 run on autograd's trajectory."""
    x = sl.initialize_latents(5, (12, 14), seed=4, dtype=torch.float64)
    config = replace(sl.PRESETS[preset], steps=40)
    ref = sl.optimize(x, replace(config, engine="autograd"))
    got = sl.optimize(x, config)
    assert (got.latents - ref.latents).abs().max().item() < 1e-8
    for key in ref.history:
        torch.testing.assert_close(
            torch.tensor(got.history[key]), torch.tensor(ref.history[key]), rtol=1e-9, atol=1e-10
        )


@pytest.mark.parametrize("preset", sorted(sl.PRESETS))
def test_presets_reach_the_same_shapes(preset):
    """float32, a full preset run: the same shapes and metrics as the autograd engine."""
    config = sl.PRESETS[preset]
    x = sl.initialize_latents(6, (32, 32), seed=7)
    ref = sl.optimize(x, replace(config, engine="autograd"))
    got = sl.optimize(x, replace(config, engine="fast"))
    diff = (got.latents - ref.latents).abs()
    assert (diff > 0.1).float().mean().item() < 0.01  # at most 1% of the pixels differ visibly
    a, b = sl.shape_metrics(ref.latents), sl.shape_metrics(got.latents)
    for field in ("bright_fraction", "near_binary", "compactness"):
        assert abs(float(getattr(a, field).mean()) - float(getattr(b, field).mean())) < 0.02, field
    assert abs(a.mean_iou - b.mean_iou) < 0.02
    assert got.history["total"][-1] == pytest.approx(ref.history["total"][-1], rel=0.05, abs=1e-3)


def test_seed_preset_stays_on_autograd_and_others_use_fast():
    assert sl.PRESETS["seed"].engine == "autograd"
    for name, config in sl.PRESETS.items():
        if name != "seed":
            assert config.engine == "fast", name


# -- the same semantics as the autograd engine --------------------------------------------------

SMALL = replace(sl.PRESETS["seed"], steps=12, engine="fast")


@pytest.fixture
def x0():
    return sl.initialize_latents(3, (16, 16), seed=11)


def test_history_frames_and_result_match_autograd(x0, host_scalars):
    got = sl.optimize(x0, SMALL, record_every=5)
    ref = sl.optimize(x0, replace(SMALL, engine="autograd"), record_every=5)
    assert list(got.history) == list(ref.history)
    for key in ref.history:
        assert len(got.history[key]) == SMALL.steps
        assert all(isinstance(v, float) for v in got.history[key])
        torch.testing.assert_close(
            torch.tensor(got.history[key]), torch.tensor(ref.history[key]), rtol=1e-4, atol=1e-6
        )
    names = [name for name, _ in SMALL.active_terms()]
    for name in names:  # the value before the first step
        expected = sl.get_term(name)(x0.detach()).item()
        assert got.history[name][0] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert got.frame_steps == ref.frame_steps == [0, 5, 10, 12]
    assert got.frames.shape == ref.frames.shape and got.frames.device.type == "cpu"
    assert torch.equal(got.frames[0], x0.detach()) and torch.equal(got.frames[-1], got.latents)
    assert got.steps_run == SMALL.steps and not got.stopped_early and got.config is SMALL
    assert not got.latents.requires_grad and got.latents.abs().max() <= 1.5
    assert sl.optimize(x0, SMALL).frames.numel() == 0


def test_never_modifies_its_input_and_keeps_dtype(x0, host_scalars):
    before = x0.detach().clone()
    sl.optimize(x0, SMALL)
    assert torch.equal(x0.detach(), before) and x0.grad is None
    assert sl.optimize(x0.detach().double(), SMALL).latents.dtype == torch.float64


def test_callback_sees_each_step_and_can_stop_early(x0, host_scalars):
    seen, totals = [], []

    def callback(step, latents, terms):
        seen.append((step, latents.requires_grad, sorted(terms)))
        totals.append(float(terms["total"]))
        # floats where the values live on the host, 0-d tensors where they stay on the device
        kind = float if host_scalars else torch.Tensor
        assert all(isinstance(v, kind) for v in terms.values())
        assert all(v.dim() == 0 for v in terms.values() if isinstance(v, torch.Tensor))
        return sl.STOP if step == 4 else None

    result = sl.optimize(x0, SMALL, callback=callback)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert not any(grad for _, grad, _ in seen)
    assert seen[0][2] == sorted([name for name, _ in SMALL.active_terms()] + ["total"])
    assert result.steps_run == 4 and result.stopped_early
    assert totals == pytest.approx(result.history["total"], rel=1e-6)


def test_inference_mode_stays_inside_the_step(x0, host_scalars, temp_term):
    """The step runs in inference mode; what a caller gets or sees is an ordinary tensor."""
    temp_term("_squares", lambda latents: (latents**2).mean())  # autograd fallback inside the step
    default = sl.PRESETS["default"]
    config = replace(default, steps=6, weights={**default.weights, "_squares": 0.1})
    seen = []

    def callback(step, latents, terms):
        seen.append((torch.is_inference_mode_enabled(), latents.is_inference()))
        leaf = latents.detach().clone().requires_grad_()  # a callback may use autograd
        (grad,) = torch.autograd.grad((leaf**2).sum(), leaf)
        assert torch.equal(grad, 2 * leaf.detach())

    result = sl.optimize(x0, config, callback=callback, record_every=2)
    assert seen == [(False, False)] * 6
    assert not result.latents.is_inference() and not result.frames.is_inference()
    result.latents.requires_grad_()  # would raise for an inference tensor
    reference = sl.optimize(x0, replace(config, engine="autograd"))
    torch.testing.assert_close(result.latents.detach(), reference.latents, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["binary01", "soft_object_size", "soft_iou", "soft_perimeter"])
@pytest.mark.parametrize("shape", [(3, 2, 7), (2, 6, 2), (2, 2, 2), (3, 5, 8)])
def test_fixed_terms_on_thin_and_tiny_images(name, shape, rand):
    """The framed, flat layouts of the blur and soft_perimeter hold for two-pixel rows and columns."""
    term = TERMS[name]
    params = {**term.defaults, **({"straight_through": False} if name == "soft_object_size" else {})}
    for seed in range(2):
        x = rand(shape, seed=seed, dtype=torch.float64, scale=0.7) + 0.4
        expected_value, expected_grad = autograd_value_and_grad(term.fn, x, **params)
        value, grad = term.fast(x, **params)
        torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
        assert_grad_close(grad, expected_grad)


@pytest.mark.parametrize("name", ["contrastive", "soft_iou"])
def test_large_batch_products_match_autograd(name, rand, monkeypatch):
    """From BLOCKED_GRAM_BATCH images on, the B x B products are built differently (blocks of a
    symmetric matrix; the areas as a row sum): forced here on a small batch."""
    monkeypatch.setattr(fast, "BLOCKED_GRAM_BATCH", 2)
    x = rand((5, 6, 7), seed=3, dtype=torch.float64, scale=0.8) + 0.3
    expected_value, expected_grad = autograd_value_and_grad(TERMS[name].fn, x)
    value, grad = TERMS[name].fast(x)
    torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
    assert_grad_close(grad, expected_grad)


@pytest.mark.parametrize("dark_images", [2, 3])
def test_soft_iou_where_the_union_clamp_holds(dark_images, host_scalars):
    """Images whose masks are exactly 0 (the sigmoid underflows): their union is held at 1e-12
    instead of dividing by 0; the other pairs keep the full gradient. Checked against autograd
    with some pairs held and with all of them."""
    params = {"threshold": 0.5, "temperature": 0.0005}  # a dark image's mask: sigmoid(-1000) = 0
    gen = torch.Generator().manual_seed(7)
    x = torch.rand((3, 6, 7), generator=gen, dtype=torch.float64) * 0.2 + 0.9  # bright
    x[:dark_images] = -torch.rand((dark_images, 6, 7), generator=gen, dtype=torch.float64)  # dark
    x[-1, 2:4, 3:5] = 0.5  # some mask values in between, where the slope is not ~0
    expected_value, expected_grad = autograd_value_and_grad(TERMS["soft_iou"].fn, x, **params)
    value, grad = TERMS["soft_iou"].fast(x, **params)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
    assert_grad_close(grad, expected_grad)


@pytest.mark.parametrize("shape", [(2, 2, 5), (3, 4, 2), (2, 7, 9), (1, 3, 3)])
def test_blurred_mask_equals_the_reference_blur(shape, rand):
    from shape_losses.losses import _blur3, _soft_mask

    x = rand(shape, seed=2, dtype=torch.float64) + 0.5  # partly outside the levels: the clip counts
    ws = fast.Workspace(x.clone())
    ws.begin()
    mask = ws.blurred_mask(0.4, 0.2)
    torch.testing.assert_close(mask.mask, _soft_mask(_blur3(x), 0.4, 0.2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ws.clipped(), x.clamp(0.0, 1.0))


def test_zero_steps_and_no_terms(x0, host_scalars):
    result = sl.optimize(x0, replace(SMALL, steps=0))
    assert torch.equal(result.latents, x0.detach()) and result.history["total"] == []
    empty = sl.optimize(x0, sl.Config(weights={}, coherence=None, steps=3, engine="fast"))
    assert empty.history == {"total": [0.0, 0.0, 0.0]}
    assert torch.equal(empty.latents, x0.detach().clamp(-1.5, 1.5))


def test_object_size_alone_moves_nothing(x0, host_scalars):
    cfg = sl.Config(weights={"object_size": 2.0}, coherence=None, steps=5, engine="fast")
    result = sl.optimize(x0, cfg)
    assert result.history["object_size"][0] > 0
    assert torch.equal(result.latents, x0.detach().clamp(-1.5, 1.5))


def test_zero_weight_terms_are_recorded_but_do_not_move_pixels(x0, host_scalars):
    cfg = sl.Config(weights={"tv": 0.0, "sparsity": 0.0}, coherence="perimeter", coherence_weight=0.0,
                    steps=4, engine="fast")
    result = sl.optimize(x0, cfg)
    assert torch.equal(result.latents, x0.detach().clamp(-1.5, 1.5))
    assert result.history["tv"][0] == pytest.approx(sl.get_term("tv")(x0.detach()).item(), rel=1e-6)


@pytest.mark.parametrize("steps_before_nan", [0, 5, 40])
def test_nan_mid_run_names_the_term_and_step(x0, temp_term, host_scalars, steps_before_nan):
    """Same error as the autograd engine: the first non-finite term and its step, even when the
    accelerator path only checks every CHECK_EVERY steps."""
    calls = []

    def goes_nan(latents):
        """Test term: fine for a while, then NaN."""
        calls.append(1)
        value = latents.mean() ** 2
        return value * math.nan if len(calls) > steps_before_nan else value

    temp_term("_goes_nan", goes_nan)
    config = replace(SMALL, steps=50).with_weights(_goes_nan=1.0)
    with pytest.raises(sl.NonFiniteLossError, match=rf"'_goes_nan'.*step {steps_before_nan}\b") as info:
        sl.optimize(x0, config)
    assert info.value.term == "_goes_nan" and info.value.step == steps_before_nan


def test_overflow_in_a_fast_term_is_caught(host_scalars):
    """A closed-form term overflowing to inf is named, at the same step as with autograd."""
    x = sl.initialize_latents(2, (12, 12), seed=0)
    config = sl.Config(weights={}, coherence="autocorr", steps=4, lr=1e30, clamp=None, engine="fast")
    errors = []
    for engine in ("autograd", "fast"):
        with pytest.raises(sl.NonFiniteLossError) as info:
            sl.optimize(x, replace(config, engine=engine))
        errors.append((info.value.term, info.value.step))
    assert errors[0] == errors[1] == ("autocorr", 1)


def test_small_cpu_runs_use_one_thread_and_restore_the_setting(x0, temp_term):
    """Small batches run on one torch thread (see fast.SINGLE_THREAD_NUMEL); the caller's
    setting comes back afterwards, also when the run raises."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inside = []
        sl.optimize(x0, SMALL, callback=lambda step, x, terms: inside.append(torch.get_num_threads()))
        assert set(inside) == {1} and torch.get_num_threads() == 2
        temp_term("_nan", lambda latents: latents.mean() * math.nan)
        with pytest.raises(sl.NonFiniteLossError):
            sl.optimize(x0, SMALL.with_weights(_nan=1.0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_optimize_fast_checks_its_arguments(x0):
    with pytest.raises(TypeError, match="config"):
        fast.optimize_fast(x0, {"steps": 3})
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast.optimize_fast(torch.full((2, 12, 12), math.nan), SMALL)
    with pytest.raises(ValueError, match="record_every"):
        fast.optimize_fast(x0, SMALL, record_every=-1)
    with pytest.raises(TypeError, match="callback"):
        fast.optimize_fast(x0, SMALL, callback=3)
