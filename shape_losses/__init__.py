"""shape-losses: sculpt blob-like shapes out of Gaussian noise with loss functions alone.

Pixels are optimized directly with Adam - no neural network. Quick start::

    import shape_losses as sl
    x = sl.initialize_latents(6, (32, 32), seed=0)
    result = sl.optimize(x, sl.PRESETS["default"])
    print(sl.shape_metrics(result.latents).table())
"""

from . import fast, losses  # noqa: F401  (registers the built-in terms and their fast forms)
from .config import ENGINES, PRESETS, SEED_WEIGHTS, Config, get_preset
from .explorer import Explorer, explorer
from .losses import (
    coherence_loss_autocorr,
    coherence_loss_morphological,
    coherence_loss_perimeter,
    contrastive_shape_loss,
    create_shape_losses,
)
from .metrics import ShapeMetrics, shape_metrics
from .noise import initialize_latents
from .optimize import STOP, NonFiniteLossError, Result, optimize
from .plots import comparison_grid, image_grid, loss_curves, save_figure, to_png_bytes
from .registry import TERMS, Term, coherence_names, get_term, register, term_names, weighted_term_names

__version__ = "0.1.0"

__all__ = [
    "ENGINES",
    "Explorer",
    "PRESETS",
    "SEED_WEIGHTS",
    "STOP",
    "TERMS",
    "Config",
    "NonFiniteLossError",
    "Result",
    "ShapeMetrics",
    "Term",
    "coherence_loss_autocorr",
    "coherence_loss_morphological",
    "coherence_loss_perimeter",
    "coherence_names",
    "comparison_grid",
    "contrastive_shape_loss",
    "create_shape_losses",
    "explorer",
    "get_preset",
    "get_term",
    "image_grid",
    "initialize_latents",
    "loss_curves",
    "optimize",
    "register",
    "save_figure",
    "shape_metrics",
    "term_names",
    "to_png_bytes",
    "weighted_term_names",
]
