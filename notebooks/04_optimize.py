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
# # 04 · The optimization: noise becomes shapes
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/shape-losses/shape-losses/blob/main/notebooks/04_optimize.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/shape-losses/shape-losses/HEAD?urlpath=lab/tree/notebooks/04_optimize.ipynb)
#
# Module: `shape_losses.optimize`. First the seed's own run, exactly as the seed configured it,
# with every term's curve and an animation; then the package's `default` preset; then the two
# engines side by side; and at the end the live explorer, where every knob is a control.

# %%
# Colab only: install shape-losses from its repository. Colab's own torch already satisfies
# the package's torch>=2.1, so pip keeps it. Elsewhere this cell does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    package = "shape-losses @ git+https://github.com/shape-losses/shape-losses"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])

# %% [markdown]
# ## Configure Loss Weights *(seed: Configure Loss Weights)*
#
# A run is described by one `Config`: a weight per term, the coherence term and its weight,
# the number of Adam steps, the learning rate and the clamp. `PRESETS['seed']` is the seed
# notebook's configuration, quirks included.

# %%
# %matplotlib inline
import io
from dataclasses import replace

import torch
from IPython.display import Image, display
from PIL import Image as PILImage

import shape_losses as sl
from shape_losses.explorer import frames_gif

torch.set_num_threads(1)  # see 01_setup: fastest for small images, same numbers on every machine

seed_cfg = sl.PRESETS["seed"]
print(seed_cfg.describe())

# %% [markdown]
# The coherence term is picked by name; these are the registered choices (or `None`):

# %%
for name in sl.coherence_names():
    print(f"{name:14s} {sl.get_term(name).doc}")

# %% [markdown]
# ## Run Optimization *(seed: Run Optimization)*
#
# The seed wrote the loop by hand: zero the gradient, compute every term, sum them with their
# weights, backpropagate, take an Adam step, clamp. `optimize` runs that loop, records every
# term at every step and, with `record_every`, keeps snapshots for an animation.

# %%
x0 = sl.initialize_latents(6, (32, 32), seed=0)
seed_run = sl.optimize(x0, seed_cfg, record_every=10)
print(f"{seed_run.steps_run} steps, {len(seed_run.frames)} snapshots: frames {tuple(seed_run.frames.shape)}")

# %% [markdown]
# The seed printed every term each 50 steps; `Result.history` holds them all (each value is the
# term *before* that step's update, as the seed recorded it):

# %%
names = list(seed_run.history)
print(f"{'step':>5s}" + "".join(f"{name:>13s}" for name in names))
for step in [*range(0, seed_cfg.steps, 50), seed_cfg.steps - 1]:
    print(f"{step:5d}" + "".join(f"{seed_run.history[name][step]:13.3f}" for name in names))

# %% [markdown]
# A `callback(step, latents, terms)` sees every step as it happens - the explorer below uses it
# for its progress bar - and returning `sl.STOP` ends the run early:

# %%
def stop_at_100(step, latents, terms):
    """Stop after the 100th update."""
    return sl.STOP if step == 100 else None


early = sl.optimize(x0, seed_cfg, callback=stop_at_100)
print(f"stopped early: {early.stopped_early}, after {early.steps_run} of {seed_cfg.steps} steps")

# %% [markdown]
# ## Visualize Results *(seed: Visualize Results)*

# %%
sl.image_grid(seed_run, title="seed preset: after 300 steps")

# %%
print(sl.shape_metrics(seed_run.latents).table())

# %% [markdown]
# The seed claimed *distinct blob-like shapes, sharp boundaries, a sparse (mostly black)
# background, and each shape different*. Compare the table with those words: how much of each
# image is bright, how many separate blobs there are, and how much the images overlap.
# **05_compare** checks each claim against these numbers.
#
# ### Watching it happen
#
# The snapshots as a strip (one row per moment)...

# %%
moments = [0, 10, 30, 100, seed_cfg.steps]
strip = {f"step {s}": seed_run.frames[seed_run.frame_steps.index(s)] for s in moments}
sl.comparison_grid(strip, title="seed preset: snapshots")

# %% [markdown]
# ...and as an animation. `frames_gif` (from the explorer) renders the snapshots with a
# caption; re-saved as an animated PNG it plays in JupyterLab, Colab, VS Code and on GitHub.

# %%
gif = frames_gif(seed_run.frames, seed_run.frame_steps)
animation = io.BytesIO()
PILImage.open(io.BytesIO(gif)).save(animation, format="PNG", save_all=True)  # keeps timing and looping
display(Image(data=animation.getvalue(), format="png"))

# %% [markdown]
# ## Plot Loss Curve *(seed: Plot Loss Curve)*
#
# The seed plotted only the total. Each term on its own axis shows who does the work (the
# terms live on very different scales, and `autocorr` is negative):

# %%
sl.loss_curves(seed_run)

# %%
total = seed_run.history["total"]
print(f"total loss: first {total[0]:.3f}, last {total[-1]:.3f}")
print(f"the seed's 'Reduction': {(1 - total[-1] / total[0]) * 100:.1f}%")

# %% [markdown]
# The seed reported that last figure as a reduction. When the total crosses zero (the
# unbounded `autocorr` term makes it negative), `1 - last/first` is no longer a share of
# anything, and it can exceed 100 %. **05_compare** replaces it with measures that keep
# their meaning.
#
# ## The default preset
#
# `PRESETS['default']` is what the package, the command line and the explorer start from; it is
# tuned to keep the seed's promise (see 05_compare for the scorecard). Its settings:

# %%
default_cfg = sl.PRESETS["default"]
print(default_cfg.describe())

# %% [markdown]
# The same starting noise, the default preset:

# %%
default_run = sl.optimize(x0, default_cfg, record_every=10)
sl.image_grid(default_run, title="default preset: after the run")

# %%
print(sl.shape_metrics(default_run.latents).table())

# %%
sl.loss_curves(default_run)

# %% [markdown]
# ## Two engines, the same shapes
#
# `engine='autograd'` is the readable reference: each term is plain torch code and autograd
# finds the gradient. `engine='fast'` computes the same gradients in closed form with shared
# intermediates and a fused Adam step. The seed preset keeps autograd so that it follows the
# seed's trajectory step for step; the fast engine's pixels can drift by rounding (a pixel on a
# tie of `sign` or `max` may go either way), so compare the shapes they reach. (Timings vary
# from machine to machine; each is the best of three runs.)

# %%
by_engine = {}
for engine in ("autograd", "fast"):
    config = replace(default_cfg, engine=engine)
    runs = [sl.optimize(x0, config) for _ in range(3)]
    by_engine[engine] = min(runs, key=lambda run: run.seconds)
    print(f"{engine:8s} time: {by_engine[engine].seconds:.3f} s")
slow, fast = by_engine["autograd"], by_engine["fast"]
print(f"speed-up: {slow.seconds / fast.seconds:.1f}x")
same_mask = (slow.latents > 0.5) == (fast.latents > 0.5)
print(f"bright masks agree on {float(same_mask.float().mean()):.1%} of the pixels")
print(f"largest pixel difference: {float((slow.latents - fast.latents).abs().max()):.3f}")

# %% [markdown]
# ## The live explorer
#
# The seed said: go back to the weights cell, edit, re-run. The explorer makes every knob a
# control - a slider per term, the coherence choice, steps, learning rate, engine, seed, batch
# and image size - and re-runs as you move them, with the images, the curves, the metrics and
# a player over the snapshots. Try the seed's suggestions (*more binary*, *less sparsity*,
# another coherence term) and watch the metrics.
#
# It needs a live kernel: on GitHub or in a static render you see nothing below. Run the
# notebook (Colab, Binder or locally), or `make app` for the explorer on its own page.

# %%
# NBVAL_IGNORE_OUTPUT
widget = sl.explorer()
widget.wait(timeout=60)  # let the first run finish, so a saved copy shows its result
display(widget)
