"""``optimize``: the seed's trajectory, the callback, frames, NaN handling and bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import seed_reference as ref
import torch

import shape_losses as sl

SMALL = replace(sl.PRESETS["seed"], steps=12)


@pytest.fixture
def x0():
    return sl.initialize_latents(3, (16, 16), seed=11)


@pytest.mark.parametrize("coherence", ["autocorr", "perimeter", "morphological", None])
def test_seed_preset_follows_the_seed_loop(coherence):
    """Same start, the seed's 300 steps: the same final images (1e-4) and total-loss history."""
    start = sl.initialize_latents(6, (32, 32), seed=0)
    result = sl.optimize(start, replace(sl.PRESETS["seed"], coherence=coherence))
    final, history = ref.seed_loop(start, coherence)
    assert len(history) == len(result.history["total"]) == 300
    assert (result.latents - final).abs().max().item() <= 1e-4
    torch.testing.assert_close(
        torch.tensor(result.history["total"], dtype=torch.float64),
        torch.tensor(history, dtype=torch.float64),
        rtol=1e-5, atol=1e-6,
    )
    assert final.abs().max() > 0.5  # the run did move the pixels


def test_history_records_every_term_before_each_step(x0):
    result = sl.optimize(x0, SMALL)
    names = [name for name, _ in SMALL.active_terms()]
    assert list(result.history) == [*names, "total"]
    assert all(len(v) == SMALL.steps for v in result.history.values())
    first = {name: sl.get_term(name)(x0.detach()).item() for name in names}
    for name in names:
        assert result.history[name][0] == pytest.approx(first[name], rel=1e-6, abs=1e-7)
    weighted = sum(first[name] * weight for name, weight in SMALL.active_terms())
    assert result.history["total"][0] == pytest.approx(weighted, rel=1e-5, abs=1e-6)
    assert result.final_losses()["total"] == result.history["total"][-1]
    assert result.steps_run == SMALL.steps and not result.stopped_early and result.config is SMALL


def test_never_modifies_its_input(x0):
    before = x0.detach().clone()
    result = sl.optimize(x0, SMALL)
    assert torch.equal(x0.detach(), before)
    assert x0.grad is None and x0.is_leaf and x0.requires_grad
    assert not result.latents.requires_grad and not torch.equal(result.latents, before)
    assert result.latents.abs().max() <= 1.5  # clamped


def test_default_config_and_determinism(x0):
    a = sl.optimize(x0, replace(sl.PRESETS["default"], steps=5))
    b = sl.optimize(x0, replace(sl.PRESETS["default"], steps=5))
    assert torch.equal(a.latents, b.latents) and a.history == b.history


def test_keeps_dtype_float64(x0):
    result = sl.optimize(x0.detach().double(), SMALL)
    assert result.latents.dtype == torch.float64


def test_callback_sees_each_step_and_can_stop_early(x0):
    seen = []

    def callback(step, latents, terms):
        seen.append((step, latents.requires_grad, sorted(terms)))
        return sl.STOP if step == 4 else None

    result = sl.optimize(x0, SMALL, callback=callback)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert not any(grad for _, grad, _ in seen)
    assert seen[0][2] == sorted([name for name, _ in SMALL.active_terms()] + ["total"])
    assert result.steps_run == 4 and result.stopped_early
    assert len(result.history["total"]) == 4


def test_callback_values_match_history(x0):
    totals = []
    result = sl.optimize(x0, SMALL, callback=lambda step, x, terms: totals.append(float(terms["total"])))
    assert totals == pytest.approx(result.history["total"])


def test_record_every_keeps_frames(x0):
    result = sl.optimize(x0, replace(SMALL, steps=10), record_every=4)
    assert result.frame_steps == [0, 4, 8, 10]
    assert result.frames.shape == (4, *x0.shape)
    assert torch.equal(result.frames[0], x0.detach())
    assert torch.equal(result.frames[-1], result.latents)
    assert sl.optimize(x0, SMALL).frames.numel() == 0


def test_zero_steps_returns_a_copy(x0):
    result = sl.optimize(x0, replace(SMALL, steps=0))
    assert torch.equal(result.latents, x0.detach()) and result.history["total"] == []
    assert result.steps_run == 0


def test_object_size_alone_moves_nothing(x0):
    """The seed's hard-threshold object size gives no gradient: a run on it alone is a no-op."""
    cfg = sl.Config(weights={"object_size": 2.0}, coherence=None, steps=5)
    result = sl.optimize(x0, cfg)
    assert result.history["object_size"][0] > 0
    assert torch.equal(result.latents, x0.detach().clamp(-1.5, 1.5))


def test_a_registered_term_is_usable_with_no_other_edit(x0, temp_term):
    def pull_up(latents, *, target: float = 1.0):
        """Test term: squared distance of every pixel to ``target``."""
        return ((latents - target) ** 2).mean()

    temp_term("_pull_up", pull_up)
    cfg = sl.Config(weights={"_pull_up": 1.0}, coherence=None, steps=40, lr=0.05, clamp=None,
                    params={"_pull_up": {"target": 0.7}})
    result = sl.optimize(x0, cfg)
    assert result.history["_pull_up"][0] == pytest.approx(((x0.detach() - 0.7) ** 2).mean().item(), rel=1e-6)
    assert result.history["_pull_up"][-1] < 0.2 * result.history["_pull_up"][0]
    assert abs(result.latents.mean().item() - 0.7) < abs(x0.detach().mean().item() - 0.7)

    temp_term("_spread", lambda latents: -latents.std(), kind="coherence")
    result = sl.optimize(x0, replace(SMALL, coherence="_spread"))
    assert "_spread" in result.history


def test_nan_mid_run_names_the_term_and_step(x0, temp_term):
    calls = []

    def goes_nan(latents):
        """Test term: fine for 5 steps, then NaN."""
        calls.append(1)
        value = latents.mean() ** 2
        return value * math.nan if len(calls) > 5 else value

    temp_term("_goes_nan", goes_nan)
    with pytest.raises(sl.NonFiniteLossError, match=r"'_goes_nan'.*step 5") as info:
        sl.optimize(x0, SMALL.with_weights(_goes_nan=1.0))
    assert info.value.term == "_goes_nan" and info.value.step == 5
    assert isinstance(info.value, FloatingPointError)


# -- bad input ----------------------------------------------------------------------------------


def test_rejects_an_image_without_batch_dimension(x0):
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        sl.optimize(x0[0], SMALL)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_latents(x0, bad):
    x = x0.detach().clone()
    x[1, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        sl.optimize(x, SMALL)


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"config": {"steps": 5}}, TypeError, "config"),
        ({"record_every": -1}, ValueError, "record_every"),
        ({"record_every": 1.5}, TypeError, "record_every"),
        ({"callback": 3}, TypeError, "callback"),
    ],
)
def test_rejects_bad_arguments(x0, kwargs, error, word):
    with pytest.raises(error, match=word):
        sl.optimize(x0, **{"config": SMALL, **kwargs})


def test_rejects_non_tensors_and_integer_tensors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        sl.optimize([[[0.0] * 12] * 12], SMALL)
    with pytest.raises(TypeError, match="floating"):
        sl.optimize(torch.zeros(2, 12, 12, dtype=torch.int32), SMALL)
