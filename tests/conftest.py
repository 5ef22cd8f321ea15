"""Shared fixtures: temporary registered terms, RNG isolation, random batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shape_losses.registry import TERMS, register, unregister

# The tests' tensors are tiny: a second intra-op thread only adds synchronisation, and on a
# busy machine OpenMP's spinning threads make each step several times slower.
torch.set_num_threads(1)


@pytest.fixture
def temp_term():
    """``temp_term(name, fn, kind='shape')`` registers ``fn`` for one test, then removes it.

    The registry is checked to be back to its former state afterwards, so one test's
    temporary term cannot leak into another's.
    """
    before = list(TERMS)
    added: list[str] = []

    def add(name: str, fn, kind: str = "shape"):
        register(name, kind=kind)(fn)
        added.append(name)
        return TERMS[name]

    yield add
    for name in added:
        unregister(name)
    assert list(TERMS) == before


@pytest.fixture
def global_rng():
    """Lets a test disturb the global torch and numpy RNGs and restores them afterwards."""
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(numpy_state)


@pytest.fixture
def rand():
    """``rand(shape, seed, dtype=float32, scale=1.0)``: a reproducible N(0, scale^2) batch,
    independent of the global RNG."""

    def make(shape, seed: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(*shape, generator=generator, dtype=dtype) * scale

    return make
