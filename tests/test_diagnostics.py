"""Per-term gradients during a run: they add up to the optimizer's gradient, and they show the
seed's tug-of-war (a term with no gradient at all, terms pulling against each other)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import shape_losses as sl
from shape_losses.diagnostics import GradientNorms, gradient_norms, term_gradients


def _short(name: str, steps: int = 30) -> sl.Config:
    return replace(sl.PRESETS[name], steps=steps)


@pytest.fixture(scope="module")
def seed_norms() -> GradientNorms:
    return gradient_norms(sl.initialize_latents(seed=21), _short("seed", 40), every=10)


@pytest.fixture(scope="module")
def default_norms() -> GradientNorms:
    return gradient_norms(sl.initialize_latents(seed=21), _short("default", 40), every=10)


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_term_gradients_add_up_to_the_total_gradient(rand, preset):
    config = sl.PRESETS[preset]
    x = rand((3, 12, 12), seed=2, dtype=torch.float64, scale=0.8) + 0.2
    grads = term_gradients(x, config)
    assert list(grads) == [name for name, _ in config.active_terms()]

    leaf = x.clone().requires_grad_(True)
    total = sum(weight * sl.get_term(name).fn(leaf, **config.term_params(name))
                for name, weight in config.active_terms())
    (expected,) = torch.autograd.grad(total, leaf)
    torch.testing.assert_close(sum(grads.values()), expected)


def test_records_at_every_interval_and_at_the_end(seed_norms):
    assert seed_norms.steps == [0, 10, 20, 30, 40]
    odd = gradient_norms(sl.initialize_latents(2, 16, seed=1), _short("default", 25), every=10)
    assert odd.steps == [0, 10, 20, 25]
    for values in (*odd.norms.values(), *odd.against_rest.values(), *odd.dominant.values(), odd.total):
        assert len(values) == len(odd.steps)


def test_measurements_are_those_of_the_images_reached(rand):
    """The norm at step k is the norm of the gradient at the images after k updates."""
    x = sl.initialize_latents(2, 16, seed=4)
    config = _short("default", 20)
    gn = gradient_norms(x, config, every=20)
    reached = sl.optimize(x, config).latents
    grads = term_gradients(reached, config)
    for name, grad in grads.items():
        assert gn.norms[name][-1] == pytest.approx(float(grad.norm()), rel=1e-5)
    assert gn.total[-1] == pytest.approx(float(sum(grads.values()).norm()), rel=1e-5)


def test_seed_object_size_never_pulls_the_fixed_one_does(seed_norms, default_norms):
    assert all(v == 0.0 for v in seed_norms.norms["object_size"])
    assert all(math.isnan(v) for v in seed_norms.against_rest["object_size"])
    assert all(v == 0.0 for v in seed_norms.dominant["object_size"])
    assert default_norms.norms["soft_object_size"][0] > 0.0


def test_seed_autocorr_pushes_to_the_clamp_against_binary_and_sparsity():
    """At the end of the seed's run most pixels sit at the +-1.5 clamp: the unbounded autocorr
    still pushes them outwards while binary (towards +-1) and sparsity (towards 0) pull them back."""
    result = sl.optimize(sl.initialize_latents(seed=8), sl.PRESETS["seed"])
    assert float((result.latents.abs() > 1.45).float().mean()) > 0.5
    grads = term_gradients(result.latents, sl.PRESETS["seed"])
    out = grads["autocorr"].flatten()
    for name in ("binary", "sparsity"):
        back = grads[name].flatten()
        assert float(out @ back) / float(out.norm() * back.norm()) < -0.5, name


def test_shares_and_cosines_are_in_range(seed_norms, default_norms):
    for gn in (seed_norms, default_norms):
        shares = np.array(list(gn.dominant.values()))
        assert np.all(shares >= 0) and np.all(shares.sum(axis=0) <= 1 + 1e-9)
        for values in gn.against_rest.values():
            finite = [v for v in values if not math.isnan(v)]
            assert all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in finite)


def test_summary_table_and_json(seed_norms):
    summary = seed_norms.summary()
    assert set(summary) == set(seed_norms.terms)
    assert summary["autocorr"]["mean_norm"] == pytest.approx(np.mean(seed_norms.norms["autocorr"]))
    table = seed_norms.table()
    assert all(name in table for name in seed_norms.terms) and "n/a" in table  # object_size's cosine
    data = json.loads(json.dumps(seed_norms.to_dict(), allow_nan=False))
    assert data["steps"] == seed_norms.steps and data["norms"]["object_size"][0] == 0.0
    assert data["config"] == seed_norms.config.to_dict()


def test_plot_returns_a_figure(default_norms):
    fig = default_norms.plot(title="default")
    assert len(fig.axes) == 2 and fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_input_is_not_modified_and_bad_input_is_named():
    x = sl.initialize_latents(2, 16, seed=3)
    before = x.detach().clone()
    gradient_norms(x, _short("default", 2), every=1)
    assert torch.equal(x.detach(), before)
    with pytest.raises(ValueError, match="every"):
        gradient_norms(x, _short("default", 2), every=0)
    with pytest.raises(TypeError, match="every"):
        gradient_norms(x, _short("default", 2), every=1.5)
    with pytest.raises(TypeError, match="config"):
        gradient_norms(x, {"binary01": 1.0})
    with pytest.raises(ValueError, match="latents"):
        gradient_norms(x[0], _short("default", 2))
    with pytest.raises(TypeError, match="config"):
        term_gradients(x, "seed")
