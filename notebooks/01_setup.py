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
# # 01 · Setup: from noise to shapes in seconds
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/shape-losses/shape-losses/blob/main/notebooks/01_setup.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/shape-losses/shape-losses/HEAD?urlpath=lab/tree/notebooks/01_setup.ipynb)
#
# This series re-tells the seed notebook, *Shape Loss Experiment: Sculpting Objects from Noise*,
# in five parts, one per module of the `shape_losses` package, and measures what the seed only
# asserted. Each section of the seed is marked where it lands, like this one
# *(seed: Shape Loss Experiment: Sculpting Objects from Noise)*.
#
# **Key idea.** No neural network: the pixel values themselves are the parameters. Adam moves
# them to lower a weighted sum of loss terms, and the terms alone decide what the images become.
#
# | notebook | what it covers | module |
# |---|---|---|
# | 01_setup | installing, the environment, seeding, a first run | - |
# | 02_losses | every loss term on tiny images you can check by eye; the seed's quirks, measured | `losses` |
# | 03_init | the blob-seeded noise the runs start from | `noise` |
# | 04_optimize | the seed's run, step by step; the tuned default; the live explorer | `optimize` |
# | 05_compare | coherence choices side by side; the seed's claims checked by numbers | `metrics`, `plots` |

# %% [markdown]
# On Colab the next cell installs the package from its repository; everywhere else
# (a local clone, Binder) it does nothing, because the package is already installed.

# %%
# Colab only: install shape-losses from its repository. Colab's own torch already satisfies
# the package's torch>=2.1, so pip keeps it. Elsewhere this cell does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    package = "shape-losses @ git+https://github.com/shape-losses/shape-losses"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])

# %% [markdown]
# ## Setup *(seed: Setup)*
#
# The seed imported torch and printed its version and device. Here is the same report for
# every library the package uses. (Versions differ from machine to machine, so the notebook
# tests mask them; everything else these notebooks print is checked exactly.)

# %%
# %matplotlib inline
import platform

import matplotlib
import numpy
import scipy
import torch

import shape_losses as sl

for name, version in [
    ("python", platform.python_version()),
    ("torch", torch.__version__),
    ("numpy", numpy.__version__),
    ("scipy", scipy.__version__),
    ("matplotlib", matplotlib.__version__),
    ("shape_losses", sl.__version__),
]:
    print(f"{name:13s} version {version}")

# %% [markdown]
# One more setting. These notebooks work on small images (a few thousand pixels), where torch's
# multi-threading costs more than it saves - several times more on a busy machine. One thread
# is fastest here, and it also makes every number identical whatever the machine's core count.
# (For large images, leave torch's default.)

# %%
torch.set_num_threads(1)
print("torch threads:", torch.get_num_threads())


# %% [markdown]
# ### Picking the device
#
# The seed used `'cuda' if torch.cuda.is_available() else 'cpu'`. The same logic, with Apple's
# GPU (MPS) in between. At the default size (6 images of 32×32) the CPU is fast enough;
# a GPU starts to pay off for large batches of large images.

# %%
def pick_device() -> str:
    """The fastest device available: a CUDA GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


device = pick_device()
print(f"device: {device} (CUDA: {torch.cuda.is_available()}, MPS: {torch.backends.mps.is_available()})")

# %% [markdown]
# ## Seeding
#
# `initialize_latents(..., seed=s)` draws from its own `torch.Generator`, so the same seed gives
# the same starting images whatever else has used the global random state before. (The seed
# notebook used numpy's global generator, so its images changed from run to run.)

# %%
first = sl.initialize_latents(6, (32, 32), seed=0)
torch.manual_seed(1234)  # disturbing the global generator changes nothing
again = sl.initialize_latents(6, (32, 32), seed=0)
other = sl.initialize_latents(6, (32, 32), seed=1)
print("same seed  -> identical images:", torch.equal(first, again))
print("other seed -> identical images:", torch.equal(first, other))

# %% [markdown]
# ## A first run
#
# Six images of 32×32 from seed 0, optimized with the package's `default` preset
# (notebook 04 shows what is in it, and how it differs from the seed's settings).

# %%
latents = sl.initialize_latents(6, (32, 32), device=device, seed=0)
result = sl.optimize(latents, sl.PRESETS["default"])
print(f"{result.steps_run} Adam steps on {tuple(latents.shape)} pixels, time: {result.seconds:.2f} s")

# %%
sl.image_grid(latents, title="start: blob-seeded noise")

# %%
sl.image_grid(result, title="after optimization: shapes")

# %% [markdown]
# Whether shapes formed is measured, not eyeballed: per image, the share of bright pixels
# (above 0.5), the number of connected bright blobs, the share of pixels near one of two levels
# (sharp black/white), and how compact the blobs are; then how much the images overlap.

# %%
print(sl.shape_metrics(result.latents).table())

# %% [markdown]
# Next: **02_losses** takes the loss terms apart one by one.
