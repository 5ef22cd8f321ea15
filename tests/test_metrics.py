"""``shape_metrics`` on hand-made images whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import shape_losses as sl

LOW, HIGH = -1.0, 1.0


def canvas(size: int = 16) -> np.ndarray:
    return np.full((size, size), LOW)


def two_squares() -> np.ndarray:
    image = canvas()
    image[2:6, 2:6] = HIGH
    image[9:13, 8:12] = HIGH
    return image


def checkerboard(size: int = 16) -> np.ndarray:
    yy, xx = np.indices((size, size))
    return np.where((yy + xx) % 2 == 0, HIGH, LOW)


def batch(*images: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.stack(images), dtype=torch.float32)


def test_two_separate_squares_are_two_blobs():
    m = sl.shape_metrics(batch(two_squares()))
    assert m.blobs.tolist() == [2]
    assert m.bright_fraction[0] == pytest.approx(32 / 256)
    assert m.compactness[0] == pytest.approx(math.pi / 4)  # 4*pi*16 / 16^2 for a 4x4 square


def test_diagonal_neighbours_are_separate_blobs():
    """Blobs are 4-connected: squares that touch only at a corner count twice."""
    image = canvas()
    image[2:5, 2:5] = HIGH
    image[5:8, 5:8] = HIGH
    assert sl.shape_metrics(batch(image)).blobs.tolist() == [2]


@pytest.mark.parametrize("size", [8, 16])
def test_a_checkerboard_is_many_blobs(size):
    m = sl.shape_metrics(batch(checkerboard(size)))
    assert m.blobs[0] == size * size // 2  # every bright square is its own blob
    assert m.bright_fraction[0] == pytest.approx(0.5)
    assert m.compactness[0] == pytest.approx(math.pi / 4)  # single pixels: 4*pi / 16


def test_blobs_do_not_depend_on_the_levels():
    image = two_squares()
    shifted = np.where(image > 0, 0.9, 0.1)
    assert sl.shape_metrics(batch(shifted)).blobs.tolist() == [2]
    assert sl.shape_metrics(batch(shifted), threshold=0.95).blobs.tolist() == [0]


def test_near_binary_of_a_clean_two_level_image_is_one():
    m = sl.shape_metrics(batch(two_squares(), checkerboard()))
    assert m.near_binary.tolist() == [1.0, 1.0]


def test_near_binary_counts_pixels_between_the_levels():
    image = two_squares()
    image[0, :] = 0.0  # 16 pixels halfway between the levels
    assert sl.shape_metrics(batch(image)).near_binary[0] == pytest.approx(1 - 16 / 256)


def test_iou_of_identical_and_disjoint_masks():
    a = canvas()
    a[:, :8] = HIGH
    b = canvas()
    b[:, 8:] = HIGH
    m = sl.shape_metrics(batch(a, a, b))
    np.testing.assert_allclose(m.pairwise_iou, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert m.mean_iou == pytest.approx(1 / 3)  # pairs (a,a)=1, (a,b)=0 twice
    half = canvas()
    half[:, :4] = HIGH  # a subset of a, half its area
    assert sl.shape_metrics(batch(a, half)).pairwise_iou[0, 1] == pytest.approx(0.5)


def test_an_image_without_blobs():
    m = sl.shape_metrics(batch(canvas(), two_squares()))
    assert m.blobs.tolist() == [0, 2] and m.bright_fraction[0] == 0
    assert math.isnan(m.compactness[0])
    assert m.summary()["compactness"] == pytest.approx(math.pi / 4)  # NaN left out of the mean
    data = m.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["per_image"]["compactness"][0] is None


def test_summary_to_dict_and_table():
    m = sl.shape_metrics(batch(two_squares(), checkerboard(), canvas()))
    s = m.summary()
    assert set(s) >= {"bright_fraction", "blobs", "near_binary", "compactness", "mean_iou", "max_iou"}
    assert s["blobs"] == pytest.approx((2 + 128 + 0) / 3)
    data = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert data["per_image"]["blobs"] == [2, 128, 0] and len(data["pairwise_iou"]) == 3
    table = m.table()
    lines = table.splitlines()
    assert "bright" in lines[0] and "blobs" in lines[0]
    assert len(lines) == 1 + 3 + 2 and "128" in lines[2] and "n/a" in lines[3]
    assert str(m) == table


def test_batch_of_one_has_no_diversity():
    m = sl.shape_metrics(batch(two_squares()))
    assert math.isnan(m.mean_iou)
    json.dumps(m.to_dict(), allow_nan=False)


def test_accepts_arrays_and_results():
    x = sl.initialize_latents(2, 16, seed=0)
    from_tensor = sl.shape_metrics(x)  # requires_grad is fine
    from_array = sl.shape_metrics(x.detach().numpy())
    np.testing.assert_array_equal(from_tensor.blobs, from_array.blobs)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        sl.shape_metrics(torch.zeros(16, 16))
    with pytest.raises(ValueError, match="NaN"):
        sl.shape_metrics(torch.full((1, 16, 16), math.nan))
    with pytest.raises(ValueError, match="threshold"):
        sl.shape_metrics(torch.zeros(1, 16, 16), threshold=math.inf)
