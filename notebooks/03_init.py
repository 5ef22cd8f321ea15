# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · The starting noise
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/shape-losses/shape-losses/blob/main/notebooks/03_init.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/shape-losses/shape-losses/HEAD?urlpath=lab/tree/notebooks/03_init.ipynb)
#
# Module: `shape_losses.noise`. Every run starts from blob-seeded Gaussian noise. This notebook
# shows what that noise looks like, how a seed makes it reproducible, and how its three knobs -
# the number of blobs, their size and their brightness - change what the losses make of it.

# %%
# Colab only: install shape-losses from its repository. Colab's own torch already satisfies
# the package's torch>=2.1, so pip keeps it. Elsewhere this cell does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    package = "shape-losses @ git+https://github.com/shape-losses/shape-losses"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])

# %% [markdown]
# ## Initialize Random Noise *(seed: Initialize Random Noise)*
#
# The seed's recipe, per image: weak Gaussian noise (standard deviation 0.1) plus two Gaussian
# blobs "to break symmetry", each centred at least 5 pixels from the edges, with a width of
# 3 to 6 pixels and a brightness between 0.5 and 1.5. `initialize_latents` follows it, for the
# whole batch at once.

# %%
# %matplotlib inline
import torch

import shape_losses as sl

torch.set_num_threads(1)  # see 01_setup: fastest for small images, same numbers on every machine

x = sl.initialize_latents(6, (32, 32), seed=0)
print(f"shape {tuple(x.shape)}, requires_grad={x.requires_grad}")
x0 = x.detach()
print(f"mean {x0.mean():.3f}, std {x0.std():.3f}, min {x0.min():.3f}, max {x0.max():.3f}")
sl.image_grid(x, title="initial noise with blob seeds (seed 0)")

# %% [markdown]
# The same measures that later tell whether shapes formed, applied to the starting noise: what
# is above 0.5 here are the blob tops, ragged at the edges where the noise crosses the threshold,
# and the smooth blob flanks are far from any two levels. Compare with the tables after the runs below.

# %%
print(sl.shape_metrics(x).table())

# %% [markdown]
# Why seed blobs at all? Notebook 02 showed that at an all-zero image every term's gradient
# vanishes, and weak noise alone is nearly symmetric between images. The blobs give each image
# a different head start, which the losses then sharpen.
#
# ## Reproducible by seed
#
# With `seed=s` the noise comes from its own generator: the same seed gives the same tensor,
# whatever else used the global random state in between. With `seed=None` it draws from torch's
# global generator, like the seed notebook (which used numpy's); then `torch.manual_seed`
# makes it repeatable.

# %%
a = sl.initialize_latents(6, (32, 32), seed=7)
torch.rand(1000)  # use the global generator in between
b = sl.initialize_latents(6, (32, 32), seed=7)
print("seed=7 twice         -> identical:", torch.equal(a, b))
print("seed=7 vs seed=8     -> identical:", torch.equal(a, sl.initialize_latents(6, (32, 32), seed=8)))
torch.manual_seed(0)
c = sl.initialize_latents(6, (32, 32))
torch.manual_seed(0)
d = sl.initialize_latents(6, (32, 32))
print("seed=None after manual_seed(0) twice -> identical:", torch.equal(c, d))

# %% [markdown]
# ## The knobs, and what they change
#
# Each study below starts from the same seed, changes one knob of the noise, runs the package's
# `default` preset (300 Adam steps) and measures the start and the end: bright fraction, blobs
# per image, near-binary fraction and the mean overlap (IoU) between the images.

# %%
DEFAULT = sl.PRESETS["default"]


def study(**variants):
    """Noise for each variant of the knobs (seed 0), the default run on each; prints the metrics."""
    starts = {label: sl.initialize_latents(6, (32, 32), seed=0, **knobs) for label, knobs in variants.items()}
    ends = {label: sl.optimize(start, DEFAULT).latents for label, start in starts.items()}
    print(f"{'':22s}{'start':>15s}   {'after the run':>28s}")
    print(f"{'':22s}{'bright':>8s}{'blobs':>7s}   {'bright':>7s}{'blobs':>7s}{'binary':>8s}{'IoU':>6s}")
    for label in variants:
        s, e = sl.shape_metrics(starts[label]).summary(), sl.shape_metrics(ends[label]).summary()
        print(f"{label:22s}{s['bright_fraction']:8.2f}{s['blobs']:7.2f}   "
              f"{e['bright_fraction']:7.2f}{e['blobs']:7.2f}{e['near_binary']:8.2f}{e['mean_iou']:6.2f}")
    return starts, ends


# %% [markdown]
# ### Blob count
#
# No blobs at all leaves only the weak noise; more blobs give more (and merging) bright seeds.

# %%
starts, ends = study(**{f"n_blobs={n}": {"n_blobs": n} for n in (0, 1, 2, 4)})

# %%
sl.comparison_grid(starts, title="start: blob count")

# %%
sl.comparison_grid(ends, metrics=True, title="after the default run: blob count")

# %% [markdown]
# ### Blob size
#
# `blob_size=(low, high)`: each blob's width is drawn from `low` to `high - 1` pixels.

# %%
starts, ends = study(**{f"blob_size={s}": {"blob_size": s} for s in [(2, 3), (3, 7), (7, 11)]})

# %%
sl.comparison_grid(starts, title="start: blob size")

# %%
sl.comparison_grid(ends, metrics=True, title="after the default run: blob size")

# %% [markdown]
# ### Blob brightness
#
# `amplitude=(low, high)`: each blob's peak value. Faint blobs stay below the 0.5 threshold that
# decides what counts as bright; bright ones start far above it.

# %%
starts, ends = study(**{f"amplitude={a}": {"amplitude": a} for a in [(0.1, 0.3), (0.5, 1.5), (1.5, 2.5)]})

# %%
sl.comparison_grid(starts, title="start: blob brightness")

# %%
sl.comparison_grid(ends, metrics=True, title="after the default run: blob brightness")

# %% [markdown]
# Read the tables row by row against the start: the numbers, not a glance at the pictures,
# say which knob moved the outcome and by how much. Try your own values in the explorer at the
# end of **04_optimize**, which runs the optimization step by step.
