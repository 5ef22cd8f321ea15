"""``initialize_latents``: the seed's recipe, vectorised and reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
import seed_reference as ref
import torch

import shape_losses as sl


def test_shape_dtype_and_leaf():
    x = sl.initialize_latents(3, (16, 24), seed=0)
    assert x.shape == (3, 16, 24) and x.dtype == torch.float32
    assert x.is_leaf and x.requires_grad and x.grad is None
    assert sl.initialize_latents(2, 13, seed=0).shape == (2, 13, 13)
    assert sl.initialize_latents(1, 11, seed=0, dtype=torch.float64).dtype == torch.float64
    assert sl.initialize_latents().shape == (6, 32, 32)  # the seed's defaults


def test_same_seed_same_tensor_whatever_the_global_rng(global_rng):
    torch.manual_seed(1)
    np.random.seed(1)
    a = sl.initialize_latents(4, (20, 20), seed=123)
    torch.manual_seed(99)
    np.random.seed(99)
    torch.rand(1000)
    state = torch.get_rng_state()
    b = sl.initialize_latents(4, (20, 20), seed=123)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded call leaves the global RNG alone


def test_different_seeds_differ():
    batches = [sl.initialize_latents(2, 16, seed=s) for s in range(5)]
    for i in range(len(batches)):
        for j in range(i):
            assert not torch.allclose(batches[i], batches[j])


def test_unseeded_draws_from_the_global_torch_rng(global_rng):
    torch.manual_seed(7)
    a = sl.initialize_latents(2, 16)
    torch.manual_seed(7)
    assert torch.equal(a, sl.initialize_latents(2, 16))
    assert not torch.equal(a, sl.initialize_latents(2, 16))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_blob_follows_the_seed_formula(seed):
    """One blob, no noise: every image is exactly ``amp * exp(-r^2 / (2 size^2))`` as in the seed,
    with the centre 5 px from the edges, an integer size in [3, 7) and a brightness in [0.5, 1.5)."""
    height, width = 19, 23
    x = sl.initialize_latents(8, (height, width), seed=seed, n_blobs=1, noise_std=0.0, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    for image in x.detach():
        cy, cx = divmod(int(image.argmax()), width)
        assert 5 <= cy < height - 5 and 5 <= cx < width - 5
        amp = float(image[cy, cx])
        assert 0.5 <= amp < 1.5
        size = math.sqrt(-1 / (2 * math.log(float(image[cy, cx + 1]) / amp)))
        assert size == pytest.approx(round(size), abs=1e-6) and 3 <= round(size) < 7
        blob = amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * round(size) ** 2))
        torch.testing.assert_close(image, blob.double())


def test_noise_only_has_the_seed_std():
    x = sl.initialize_latents(64, 32, seed=3, n_blobs=0).detach()
    assert x.mean().item() == pytest.approx(0.0, abs=0.003)
    assert x.std().item() == pytest.approx(0.1, rel=0.02)


def _stats(x: torch.Tensor) -> np.ndarray:
    x = x.detach()
    return np.array([x.mean().item(), x.std().item(), (x > 0.5).float().mean().item(),
                     x.amax(dim=(1, 2)).mean().item()])


@pytest.mark.parametrize("seed", [0, 1])
def test_same_distribution_as_the_seed(global_rng, seed):
    """Mean, spread, bright share and peak of 400 images agree with the seed's own code
    (tolerances ~6 standard errors of the difference, measured over 20 seeds)."""
    ours = _stats(sl.initialize_latents(400, (32, 32), seed=seed))
    np.random.seed(seed)
    torch.manual_seed(seed)
    theirs = _stats(ref.initialize_latents(400, (32, 32)))
    assert np.all(np.abs(ours - theirs) < [0.04, 0.05, 0.035, 0.19]), (ours, theirs)


def test_works_at_the_smallest_size_where_the_seed_crashes():
    assert sl.initialize_latents(2, (11, 11), seed=0).shape == (2, 11, 11)
    with pytest.raises(ValueError):  # the seed fails inside numpy: randint(5, 5)
        ref.initialize_latents(1, (10, 10))


@pytest.mark.parametrize("batch_size", [0, -1])
def test_rejects_batch_size_below_one(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        sl.initialize_latents(batch_size, seed=0)


@pytest.mark.parametrize("image_size", [10, (10, 32), (32, 5), (0, 0)])
def test_rejects_images_too_small_for_the_blobs(image_size):
    with pytest.raises(ValueError, match=r"image_size.*11"):
        sl.initialize_latents(2, image_size, seed=0)


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"image_size": (32,)}, TypeError, "image_size"),
        ({"image_size": (32.0, 32.0)}, TypeError, "image_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"n_blobs": -1}, ValueError, "n_blobs"),
        ({"blob_size": (7, 3)}, ValueError, "blob_size"),
        ({"amplitude": (1.0,)}, TypeError, "amplitude"),
        ({"noise_std": -0.1}, ValueError, "noise_std"),
        ({"noise_std": float("nan")}, ValueError, "noise_std"),
        ({"dtype": torch.int32}, TypeError, "dtype"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        sl.initialize_latents(**{"batch_size": 2, "image_size": 16, **kwargs})
