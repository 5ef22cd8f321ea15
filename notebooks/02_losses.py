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
# # 02 · The loss terms, one by one
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/shape-losses/shape-losses/blob/main/notebooks/02_losses.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/shape-losses/shape-losses/HEAD?urlpath=lab/tree/notebooks/02_losses.ipynb)
#
# Module: `shape_losses.losses`. Every term is evaluated on three tiny images whose values you
# can work out by hand, its gradient is drawn as an image, and then each quirk of the seed's
# terms is shown by a measurement.

# %%
# Colab only: install shape-losses from its repository. Colab's own torch already satisfies
# the package's torch>=2.1, so pip keeps it. Elsewhere this cell does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    package = "shape-losses @ git+https://github.com/shape-losses/shape-losses"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])

# %% [markdown]
# ## Loss Functions *(seed: Loss Functions)*
#
# The seed wrote its terms as functions of a batch `latent` of shape `[B, H, W]`, each returning
# a number. The package keeps them exactly (bugs included) and registers each one by name, so
# `Config`, `optimize`, the command line and the explorer all find them in one place. Here is
# the registry: the name, the kind (*shape* and *batch* terms get a weight each; one *coherence*
# term is chosen per run), whether the seed had it, and what it rewards.

# %%
# %matplotlib inline
from dataclasses import replace

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import shape_losses as sl

torch.set_num_threads(1)  # see 01_setup: fastest for small images, same numbers on every machine

for name, term in sl.TERMS.items():
    origin = "seed" if term.seed else "new"
    print(f"{name:15s} {term.kind:9s} {origin:4s}  {term.doc}")

# %% [markdown]
# ## Three tiny images
#
# 8×8 pixels, off = 0 and on = 1: a **flat** image (all off), a **square** (a 4×4 block on,
# 16 of 64 pixels) and a **checkerboard** (every other pixel on, 32 of 64).

# %%
flat = torch.zeros(8, 8)
square = flat.clone()
square[2:6, 2:6] = 1.0
checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()
images = {"flat": flat, "square": square, "checker": checker}
sl.image_grid(torch.stack(list(images.values())), titles=list(images), vmin=0, vmax=1)

# %% [markdown]
# What each seed term should give, worked out by hand (N = 64 pixels; a neighbour pair is two
# pixels side by side, 56 pairs per direction):
#
# | term | formula | flat | square | checker |
# |---|---|---|---|---|
# | sparsity | mean \|x\| = share of on pixels | 0 | 16/64 = 0.25 | 32/64 = 0.5 |
# | binary | mean distance² to ±1: an off pixel (0) costs 1 | 1 | 48/64 = 0.75 | 0.5 |
# | tv | share of differing neighbour pairs, per direction, summed | 0 | 8/56 + 8/56 = 0.286 | 1 + 1 = 2 |
# | object_size | (share of pixels > 0.5 − 0.2)² | 0.04 | 0.05² = 0.0025 | 0.3² = 0.09 |
# | magnitude | max(0, 0.3 − mean \|x\|) | 0.3 | 0.05 | 0 |
# | autocorr | −(share of pairs both on, per direction, summed) | 0 | −(12/56 + 12/56) = −0.429 | 0 |
# | perimeter | edges / area of the (soft) on region | 0 | ≈ 16/16 = 1 | ≈ 112/32 = 3.5 |
# | morphological | mean (x − closing(x))²; a closing fills dark gaps | 0 | 0 | all off pixels filled: 0.5 |
#
# And measured (the soft threshold of `perimeter` makes its values a little below the hand count):

# %%
seed_terms = [name for name, term in sl.TERMS.items() if term.seed and term.kind != "batch"]


def term_table(names, images):
    """Print each term's value on each image (batches of one)."""
    print(f"{'term':15s}" + "".join(f"{label:>9s}" for label in images))
    for name in names:
        values = [float(sl.get_term(name)(image[None])) + 0.0 for image in images.values()]
        print(f"{name:15s}" + "".join(f"{value:9.3f}" for value in values))


term_table(seed_terms, images)

# %% [markdown]
# The **contrastive** term compares the images of a batch: the mean |cosine similarity| between
# them. The seed averages over all B×B pairs, the zero diagonal included, so two identical
# images score (B − 1)/B = 0.5, not 1. An all-zero image has no direction and counts as 0.

# %%
contrastive = sl.get_term("contrastive")
pairs = {
    "square, square": (square, square),
    "square, checker": (square, checker),
    "square, -square": (square, -square),
    "square, flat": (square, flat),
}
for label, pair in pairs.items():
    print(f"{label:16s} {float(contrastive(torch.stack(pair))):.3f}")

# %% [markdown]
# Note `square, -square`: the absolute value makes an image and its negative "alike" too.
#
# ## What each term asks of each pixel
#
# The gradient says how each pixel should move to lower the term; Adam moves pixels against
# it. Below, each row is one term's **negative gradient** on the three images (flat, square,
# checker), scaled per row so that white = pushed up hardest, black = pushed down hardest,
# mid-grey = left alone. The largest |gradient| of each row is printed above the figure.


# %%
def descent(name, image):
    """Minus the gradient of term `name` at `image` (a batch of one)."""
    x = image[None].clone().requires_grad_(True)
    value = sl.get_term(name)(x)
    if not value.requires_grad:  # the term does not depend on the pixels through autograd
        return torch.zeros_like(image)
    (grad,) = torch.autograd.grad(value, x)
    return -grad[0]


def descent_grid(names, images):
    """One row per term: its negative gradient on each image, scaled so the row's largest is 1."""
    rows = {name: torch.stack([descent(name, image) for image in images.values()]) for name in names}
    for name, g in rows.items():
        print(f"{name:17s} largest |gradient|: " + "  ".join(f"{float(x.abs().max()):.4f}" for x in g))
    scaled = {name: g / g.abs().max().clamp_min(1e-12) for name, g in rows.items()}
    return sl.comparison_grid(scaled, vmin=-1, vmax=1, title=f"negative gradient: {' | '.join(images)}")


descent_grid(seed_terms, images)

# %% [markdown]
# Read it row by row. `sparsity` pushes every on pixel down. `binary` leaves all three images
# alone: on pixels already sit at its level +1, and an off pixel at 0 is exactly halfway between
# −1 and +1, where the two pulls cancel. `tv` acts only along edges. `magnitude` pushes the
# square's on pixels up (its mean |x|, 0.25, is below 0.3) and leaves the checkerboard (0.5)
# alone. `autocorr` pushes up pixels next to bright neighbours, `perimeter` works along the
# boundary, and `morphological` pulls the checkerboard's off pixels up to fill them.
# The flat image is grey in every row: at exactly 0 every term's gradient vanishes, so an
# all-zero start would never move - one reason the runs start from noise (notebook 03).
# And `object_size` is a flat grey row: it never moves a pixel. That is the first quirk.
#
# ## The seed's quirks, measured
#
# ### 1. `object_size` has no gradient
#
# It counts pixels with a hard test `latents > 0.5`. A comparison has no derivative, so the
# term is cut off from the pixels: its value reports the gap to 20 % bright, but nothing in
# the optimization can react to it.

# %%
noise = sl.initialize_latents(6, (32, 32), seed=0)
value = sl.get_term("object_size")(noise)
bright = float((noise > 0.5).float().mean())
print(f"bright fraction {bright:.3f} -> object_size = ({bright:.3f} - 0.2)^2 = {float(value):.5f}")
print("connected to the pixels by autograd:", value.requires_grad)

# %% [markdown]
# The proof in a run: the seed's settings for 100 steps with `object_size` weighted 0, 2 (the
# seed's weight) and 100, from the same noise. If the term did anything, the results would differ.

# %%
short = replace(sl.PRESETS["seed"], steps=100)
finals = {w: sl.optimize(noise, short.with_weights(object_size=w)).latents for w in (0.0, 2.0, 100.0)}
for w in (2.0, 100.0):
    difference = float((finals[w] - finals[0.0]).abs().max())
    print(f"weight {w:5.1f} vs 0: largest pixel difference {difference:.6f}")

# %% [markdown]
# ### 2. `autocorr` is unbounded below and rewards saturating at the clamp
#
# It is minus the mean product of neighbours, so scaling an image by k scales it by k².
# There is no best brightness: the brighter, the better, without end.

# %%
for k in (1.0, 1.5, 3.0, 10.0):
    print(f"autocorr of {k:4.1f} x square: {float(sl.get_term('autocorr')((k * square)[None])):8.3f}")

# %% [markdown]
# In a run only the seed's clamp to ±1.5 stops it. The share of pixels pinned at the clamp after
# the seed's 300 steps, with `autocorr` (the seed's choice) and with no coherence term:

# %%
seed_cfg = sl.PRESETS["seed"]
for coherence in ("autocorr", None):
    final = sl.optimize(noise, replace(seed_cfg, coherence=coherence)).latents
    pinned = float((final.abs() >= 1.5 - 1e-6).float().mean())
    print(f"coherence {coherence!s:9s}: {pinned:.1%} of the pixels at the clamp (+-1.5)")

# %% [markdown]
# ### 3. Perimeter / area is 0 for an all-on or all-off image
#
# No edges means zero perimeter, whatever the area: an image that is entirely on (or entirely
# off) scores as well as, or better than, any blob.

# %%
perimeter = sl.get_term("perimeter")
for label, image in {"all off (-1.5)": -1.5 * torch.ones(8, 8), "all on (+1.5)": 1.5 * torch.ones(8, 8),
                     "square": square}.items():
    print(f"perimeter of {label:15s}: {float(perimeter(image[None])):.3f}")

# %% [markdown]
# ### 4. The morphological closing does not penalise an isolated bright pixel
#
# A closing (max-pool, then min-pool) fills small **dark** gaps but gives back a lone **bright**
# speck unchanged, so the speck costs nothing, while a single dark hole does cost.

# %%
speck = torch.zeros(8, 8)
speck[4, 4] = 1.0
hole = torch.ones(8, 8)
hole[4, 4] = 0.0
morphological = sl.get_term("morphological")
print(f"morphological, one bright pixel on dark: {float(morphological(speck[None])):.4f}")
print(f"morphological, one dark pixel on bright: {float(morphological(hole[None])):.4f}  (= 1/64)")

# %% [markdown]
# ### 5. `sparsity`, `binary` and `magnitude` pull in opposite directions
#
# `sparsity` pulls every pixel to 0, `binary` to −1 or +1, and `magnitude` pushes pixels away
# from 0 until the mean |x| reaches 0.3. On the starting noise, the cosine between their
# gradients (−1 = exactly opposed, 0 = unrelated, +1 = aligned):

# %%
def gradient(name, x):
    """The gradient of term `name` at the batch `x`, flattened."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sl.get_term(name)(x), x)
    return grad.flatten()


faint = 0.2 * noise.detach()  # mean |x| below 0.3, so that magnitude is active
grads = {name: gradient(name, faint) for name in ("sparsity", "binary", "magnitude")}
cos = torch.nn.functional.cosine_similarity
for a, b in [("sparsity", "binary"), ("sparsity", "magnitude"), ("binary", "magnitude")]:
    print(f"cos({a}, {b}) = {float(cos(grads[a], grads[b], dim=0)):+.3f}")

# %% [markdown]
# Where does a pixel settle between them? Each term as a function of one pixel's value v
# (an image filled with v), weighted as in the seed, and their sum:

# %%
v = torch.linspace(-1.5, 1.5, 601)
w = sl.PRESETS["seed"].weights
curves = {
    f"sparsity x {w['sparsity']:g}": w["sparsity"] * v.abs(),
    f"binary x {w['binary']:g}": w["binary"] * torch.minimum((v - 1) ** 2, (v + 1) ** 2),
    f"magnitude x {w['magnitude']:g}": w["magnitude"] * torch.relu(0.3 - v.abs()),
}
total = sum(curves.values())
fig, ax = plt.subplots(figsize=(7, 3))
for label, curve in curves.items():
    ax.plot(v, curve, label=label)
ax.plot(v, total, "k", linewidth=2, label="sum")
ax.set_xlabel("pixel value v")
ax.set_ylim(-0.1, 2)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()
best = v[torch.argmin(total)]
print(f"the sum is lowest at v = {float(best):+.3f} (and at {float(-best):+.3f}): neither 0 nor +-1")

# %% [markdown]
# ## Terms added since the seed
#
# The package adds terms that fix these quirks (new names; the seed's terms stay as they were).
# Each one's docstring says what it fixes; here they are on the same three images.

# %%
new_terms = [name for name, term in sl.TERMS.items() if not term.seed and term.kind != "batch"]
for name in new_terms:
    print(f"{name}: {sl.get_term(name).doc}")
if new_terms:
    term_table(new_terms, images)
else:
    print("(none registered yet)")

# %% [markdown]
# Their gradients on the same images (compare with the seed's rows above):

# %%
if new_terms:
    display(descent_grid(new_terms, images))

# %% [markdown]
# Next: **03_init** looks at the noise that every run starts from.
