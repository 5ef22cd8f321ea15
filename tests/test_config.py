"""``Config`` and ``PRESETS``: the seed's run as data, validated when made."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest
import seed_reference as ref
import torch

import shape_losses as sl
from shape_losses.config import ENGINES


def test_seed_preset_is_the_seed_notebooks_run():
    cfg = sl.PRESETS["seed"]
    assert list(cfg.weights.items()) == list(ref.SEED_WEIGHTS.items())  # values and summation order
    assert cfg.coherence == "autocorr" and cfg.coherence_weight == 2.0
    assert cfg.steps == 300 and cfg.lr == 0.02 and cfg.clamp == (-1.5, 1.5)
    assert cfg.engine == "autograd" and dict(cfg.params) == {}
    assert cfg.active_terms()[-1] == ("autocorr", 2.0)


def test_every_preset_is_a_valid_config():
    assert {"seed", "default"} <= set(sl.PRESETS)
    for name, cfg in sl.PRESETS.items():
        assert isinstance(cfg, sl.Config), name
        assert sl.get_preset(name) is cfg
        json.dumps(cfg.to_dict())


def test_frozen_and_replaceable():
    cfg = sl.PRESETS["seed"]
    short = dataclasses.replace(cfg, steps=50, coherence=None)
    assert short.steps == 50 and short.coherence is None and cfg.steps == 300
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 10
    with pytest.raises(TypeError):
        cfg.weights["tv"] = 3.0
    assert short.with_weights(tv=0.3).weights["tv"] == 0.3 and short.weights["tv"] == 0.05
    assert hash(dataclasses.replace(cfg)) == hash(cfg) and dataclasses.replace(cfg) == cfg


def test_none_string_means_no_coherence():
    assert sl.Config(coherence="none").coherence is None
    assert sl.Config(coherence=None).active_terms() == list(ref.SEED_WEIGHTS.items())


def test_to_dict_and_describe():
    cfg = sl.Config(params={"perimeter": {"temperature": 0.2}}, coherence="perimeter")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["coherence"] == "perimeter" and data["params"] == {"perimeter": {"temperature": 0.2}}
    assert data["weights"] == ref.SEED_WEIGHTS and data["clamp"] == [-1.5, 1.5]
    text = cfg.describe()
    for word in [*ref.SEED_WEIGHTS, "perimeter", "temperature=0.2", "300 steps"]:
        assert word in text


def test_term_params_merge_defaults():
    cfg = sl.Config(params={"perimeter": {"temperature": 0.2}})
    assert cfg.term_params("perimeter") == {"threshold": 0.5, "temperature": 0.2}
    assert cfg.term_params("object_size") == {"threshold": 0.5, "target": 0.2}


def test_a_registered_term_is_usable_with_no_other_edit(temp_term):
    def edge_mean(latents, *, strength: float = 1.0):
        """Test term."""
        return strength * latents.mean()

    temp_term("_edge_mean", edge_mean)
    cfg = sl.PRESETS["seed"].with_weights(_edge_mean=0.5)
    cfg = dataclasses.replace(cfg, params={"_edge_mean": {"strength": 3.0}})
    assert ("_edge_mean", 0.5) in cfg.active_terms()
    assert cfg.term_params("_edge_mean") == {"strength": 3.0}
    temp_term("_coh", lambda latents: latents.std(), kind="coherence")
    assert sl.Config(coherence="_coh").active_terms()[-1] == ("_coh", 2.0)


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_coherence_lists_the_valid_names():
    with pytest.raises(ValueError, match="coherence") as info:
        sl.Config(coherence="smoothness")
    for name in sl.coherence_names():
        assert name in str(info.value)


def test_unknown_weight_lists_the_valid_names():
    with pytest.raises(ValueError, match="'bogus'") as info:
        sl.Config(weights={"bogus": 1.0})
    for name in sl.weighted_term_names():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="coherence term"):
        sl.Config(weights={"autocorr": 1.0})


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"lr": 0}, ValueError, "lr"),
        ({"lr": -0.01}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": "0.02"}, TypeError, "lr"),
        ({"steps": -1}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"coherence_weight": -1.0}, ValueError, "coherence_weight"),
        ({"weights": {"tv": -0.1}}, ValueError, "tv"),
        ({"weights": {"tv": float("inf")}}, ValueError, "tv"),
        ({"weights": [("tv", 1.0)]}, TypeError, "weights"),
        ({"clamp": (1.5, -1.5)}, ValueError, "clamp"),
        ({"clamp": 1.5}, TypeError, "clamp"),
        ({"params": {"nope": {}}}, ValueError, "nope"),
        ({"params": {"perimeter": {"sharpness": 1.0}}}, ValueError, "temperature"),
        ({"params": {"perimeter": 0.1}}, TypeError, "perimeter"),
        ({"engine": "jax"}, ValueError, "autograd"),
    ],
)
def test_rejects_bad_values_naming_the_parameter(kwargs, error, word):
    with pytest.raises(error, match=word):
        sl.Config(**kwargs)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="seed"):
        sl.get_preset("best")


def test_engines():
    assert ENGINES == ("autograd", "fast") and sl.Config(engine="fast").engine == "fast"


def test_config_pickles_and_deep_copies():
    """Config is plain data: it goes into JSON, hashes, deep copies and crosses processes."""
    cfg = sl.Config(coherence="perimeter", params={"perimeter": {"temperature": 0.2}}, clamp=None)
    for copy_ in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert copy_ == cfg and hash(copy_) == hash(cfg)
        assert copy_.term_params("perimeter")["temperature"] == 0.2
    for value in vars(sl.PRESETS["seed"]).values():
        assert not isinstance(value, torch.Tensor)
