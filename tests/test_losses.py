"""The loss terms against the seed's own code, their gradients, and their bad input."""

from __future__ import annotations

import inspect

import pytest
import seed_reference as ref
import torch

import shape_losses as sl
from shape_losses import losses

SHAPES = [(1, 11, 11), (2, 7, 5), (3, 16, 24), (6, 32, 32)]
SCALES = [0.15, 0.7, 1.5]  # below the magnitude floor, around the thresholds, at the clamp


def _batches(rand, dtype=torch.float32):
    for i, shape in enumerate(SHAPES):
        for j, scale in enumerate(SCALES):
            yield rand(shape, seed=100 * i + j, dtype=dtype, scale=scale) + 0.3 * (j - 1)


# -- seed equivalence ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_create_shape_losses_matches_seed(rand, dtype):
    for x in _batches(rand, dtype):
        ours, seed = sl.create_shape_losses(x), ref.create_shape_losses(x)
        assert list(ours) == list(seed) == ["sparsity", "binary", "tv", "object_size", "magnitude"]
        for name in seed:
            torch.testing.assert_close(ours[name], seed[name], check_dtype=False, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coherence_and_contrastive_match_seed(rand, dtype):
    pairs = [
        (sl.coherence_loss_autocorr, ref.coherence_loss_autocorr),
        (sl.coherence_loss_perimeter, ref.coherence_loss_perimeter),
        (sl.coherence_loss_morphological, ref.coherence_loss_morphological),
        (sl.contrastive_shape_loss, ref.contrastive_shape_loss),
    ]
    for x in _batches(rand, dtype):
        for ours, seed in pairs:
            torch.testing.assert_close(ours(x), seed(x), check_dtype=False, msg=ours.__name__)


def test_perimeter_parameters_match_seed(rand):
    x = rand((3, 12, 14), seed=7)
    for threshold, temperature in [(0.0, 0.5), (0.3, 0.05), (-0.2, 1.0)]:
        torch.testing.assert_close(
            sl.coherence_loss_perimeter(x, threshold, temperature),
            ref.coherence_loss_perimeter(x, threshold, temperature),
        )


def test_registered_terms_are_the_seed_functions(rand):
    """The registry's seed terms compute what the seed-compatible functions compute."""
    x = rand((4, 13, 9), seed=3)
    shape = sl.create_shape_losses(x)
    for name in losses.SEED_SHAPE_TERMS:
        assert sl.get_term(name).seed
        torch.testing.assert_close(sl.get_term(name)(x), shape[name])
    torch.testing.assert_close(sl.get_term("contrastive")(x), sl.contrastive_shape_loss(x))
    torch.testing.assert_close(sl.get_term("autocorr")(x), sl.coherence_loss_autocorr(x))
    torch.testing.assert_close(sl.get_term("perimeter")(x), sl.coherence_loss_perimeter(x))
    torch.testing.assert_close(sl.get_term("morphological")(x), sl.coherence_loss_morphological(x))


@pytest.mark.parametrize(
    "name",
    ["create_shape_losses", "coherence_loss_autocorr", "coherence_loss_perimeter",
     "coherence_loss_morphological", "contrastive_shape_loss", "initialize_latents"],
)
def test_seed_signatures_kept(name):
    """Same names, positional parameters and defaults as the seed (extra ones keyword-only)."""
    ours = inspect.signature(getattr(sl, name)).parameters
    seed = inspect.signature(getattr(ref, name)).parameters
    positional = [p for p in ours.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in seed.values()]


def test_contrastive_of_one_is_zero_on_input_dtype_and_device(rand):
    x = rand((1, 12, 12), seed=0, dtype=torch.float64)
    for fn in (sl.contrastive_shape_loss, sl.get_term("contrastive")):
        out = fn(x)
        assert out.dtype == torch.float64 and out.device == x.device and out.dim() == 0
        assert out.item() == 0.0
    meta = torch.empty(1, 12, 12, device="meta")
    assert sl.contrastive_shape_loss(meta).device.type == "meta"
    # the seed itself returned a float32 CPU tensor whatever the input
    assert ref.contrastive_shape_loss(meta).device.type == "cpu"


def test_contrastive_rewards_different_images(rand):
    a = rand((1, 10, 10), seed=1)
    same = torch.cat([a, a, a])
    assert sl.contrastive_shape_loss(same).item() == pytest.approx(2 / 3)  # mean over B^2 incl. diagonal
    assert sl.contrastive_shape_loss(rand((3, 10, 10), seed=2)).item() < 0.3


# -- gradients ----------------------------------------------------------------------------------


def _away_from_zero(x: torch.Tensor, gap: float = 0.1) -> torch.Tensor:
    """Moves every value at least ``gap`` from 0, where |x| and the binary min have kinks."""
    return torch.sign(x) * (x.abs() + gap)


GRAD_CASES = {
    "sparsity": lambda x: _away_from_zero(x),
    "binary": lambda x: _away_from_zero(x),
    "tv": lambda x: x,
    "magnitude": lambda x: _away_from_zero(x) * 0.1,  # mean |x| < 0.3: the hinge is active
    "contrastive": lambda x: x,
    "autocorr": lambda x: x,
    "perimeter": lambda x: 0.5 + 0.2 * x,  # around the threshold, where the sigmoid is not flat
    "morphological": lambda x: x,
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradcheck_float64(rand, name):
    for seed in range(2):
        x = GRAD_CASES[name](rand((3, 6, 7), seed=seed, dtype=torch.float64)).requires_grad_(True)
        term = sl.get_term(name)
        assert torch.autograd.gradcheck(lambda t, term=term: term(t), (x,), eps=1e-6, atol=1e-5)


def test_magnitude_gradient_vanishes_above_its_floor(rand):
    x = (_away_from_zero(rand((2, 8, 8), seed=4, dtype=torch.float64)) + 1).requires_grad_(True)
    assert torch.autograd.gradcheck(sl.get_term("magnitude").fn, (x,))
    (grad,) = torch.autograd.grad(sl.get_term("magnitude")(x) + 0 * x.sum(), x)
    assert torch.count_nonzero(grad) == 0


def test_seed_object_size_has_no_gradient(rand):
    """Documents the seed's bug: the hard threshold cuts the graph, so its weight does nothing."""
    x = rand((4, 16, 16), seed=5, scale=0.8).requires_grad_(True)
    size = sl.create_shape_losses(x)["object_size"]
    assert size.item() > 0  # it does report a gap...
    assert not size.requires_grad  # ...but carries no gradient at all
    assert not ref.create_shape_losses(x)["object_size"].requires_grad  # as in the seed

    def seed_total_grad(object_size_weight):
        terms = ref.create_shape_losses(x)
        weights = {**ref.SEED_WEIGHTS, "object_size": object_size_weight}
        total = sum(terms[k] * weights[k] for k in terms) + 2.0 * ref.contrastive_shape_loss(x)
        return torch.autograd.grad(total, x)[0]

    assert torch.equal(seed_total_grad(2.0), seed_total_grad(0.0))
    assert torch.equal(seed_total_grad(2.0), seed_total_grad(1000.0))


# -- bad input ----------------------------------------------------------------------------------

SEED_FUNCTIONS = [
    sl.create_shape_losses,
    sl.coherence_loss_autocorr,
    sl.coherence_loss_perimeter,
    sl.coherence_loss_morphological,
    sl.contrastive_shape_loss,
]


@pytest.mark.parametrize("fn", SEED_FUNCTIONS, ids=lambda f: f.__name__)
def test_seed_functions_reject_an_image_without_batch_dimension(fn):
    with pytest.raises(ValueError, match=r"\[B, H, W\].*unsqueeze"):
        fn(torch.zeros(16, 16))


@pytest.mark.parametrize("fn", SEED_FUNCTIONS, ids=lambda f: f.__name__)
def test_seed_functions_reject_non_tensors_and_integer_tensors(fn):
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([[[0.0, 1.0], [1.0, 0.0]]])
    with pytest.raises(TypeError, match="floating"):
        fn(torch.zeros(2, 8, 8, dtype=torch.int64))


def test_perimeter_rejects_non_positive_temperature(rand):
    with pytest.raises(ValueError, match="temperature"):
        sl.coherence_loss_perimeter(rand((2, 8, 8), seed=0), 0.5, 0.0)


def test_register_rejects_bad_terms(temp_term):
    with pytest.raises(ValueError, match="already registered"):
        temp_term("sparsity", lambda latents: latents.mean())
    with pytest.raises(TypeError, match="keyword-only"):
        temp_term("_bad_param", lambda latents, strength=1.0: latents.mean())
    with pytest.raises(ValueError, match="kind"):
        temp_term("_bad_kind", lambda latents: latents.mean(), kind="other")
    with pytest.raises(ValueError, match="registered terms"):
        sl.get_term("no_such_term")
