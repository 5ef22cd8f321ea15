"""The seed notebook's code, copied verbatim: the reference the package is tested against.

Source: ``shared/seed/shape_loss_experiment.md`` ("Loss Functions", "Initialize Random Noise",
"Run Optimization"). The function bodies below are the seed's, unchanged (comments trimmed);
only ``seed_loop`` wraps the seed's main-run loop in a function (its printing and plotting
dropped) so that tests and benchmarks can call it. Do not "fix" anything here: the point is
to reproduce what the seed really did, bugs included.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# The seed's loss functions (verbatim)
# ---------------------------------------------------------------------------------------------


def create_shape_losses(latent):
    B, H, W = latent.shape
    losses = {}

    # 1. Sparsity - most pixels should be background (near 0)
    losses['sparsity'] = torch.mean(torch.abs(latent))

    # 2. Binary-ness - pixels should be either on or off
    distance_from_binary = torch.min(
        (latent - 1.0)**2,  # Distance from 1
        (latent + 1.0)**2   # Distance from -1
    )
    losses['binary'] = torch.mean(distance_from_binary)

    # 3. Smoothness within objects (Total Variation)
    dx = torch.abs(latent[:, 1:, :] - latent[:, :-1, :])
    dy = torch.abs(latent[:, :, 1:] - latent[:, :, :-1])
    losses['tv'] = torch.mean(dx) + torch.mean(dy)

    # 4. Object size - encourage ~20% of pixels to be bright
    threshold = 0.5
    binary_mask = (latent > threshold).float()
    bright_ratio = torch.mean(binary_mask)
    target_ratio = 0.2
    losses['object_size'] = (bright_ratio - target_ratio)**2

    # 5. Magnitude - prevent collapse to near-zero values
    magnitude = torch.mean(torch.abs(latent))
    min_magnitude = 0.3
    losses['magnitude'] = torch.relu(min_magnitude - magnitude)

    return losses


def coherence_loss_autocorr(latent):
    dx = latent[:, 1:, :] * latent[:, :-1, :]  # Horizontal neighbors
    dy = latent[:, :, 1:] * latent[:, :, :-1]  # Vertical neighbors

    autocorr = torch.mean(dx) + torch.mean(dy)

    return -autocorr


def coherence_loss_perimeter(latent, threshold=0.5, temperature=0.1):
    binary_soft = torch.sigmoid((latent - threshold) / temperature)

    dx = torch.abs(binary_soft[:, 1:, :] - binary_soft[:, :-1, :])
    dy = torch.abs(binary_soft[:, :, 1:] - binary_soft[:, :, :-1])

    edge_length = torch.sum(dx) + torch.sum(dy)

    area = torch.sum(binary_soft) + 1e-6  # Avoid division by zero

    return edge_length / area


def coherence_loss_morphological(latent):
    latent_4d = latent.unsqueeze(1)  # [B, 1, H, W]

    pooled = F.max_pool2d(latent_4d, kernel_size=3, stride=1, padding=1)

    unpooled = -F.max_pool2d(-pooled, kernel_size=3, stride=1, padding=1)

    unpooled = unpooled.squeeze(1)

    return torch.mean((latent - unpooled) ** 2)


def contrastive_shape_loss(latents):
    B = latents.shape[0]
    if B < 2:
        return torch.tensor(0.0)

    flat = latents.reshape(B, -1)
    flat_norm = F.normalize(flat, dim=1)

    sim_matrix = torch.matmul(flat_norm, flat_norm.T)

    mask = 1.0 - torch.eye(B).to(latents.device)
    loss = torch.mean(torch.abs(sim_matrix) * mask)

    return loss


# ---------------------------------------------------------------------------------------------
# The seed's initial noise (verbatim: global numpy RNG for the blobs, torch's for the noise)
# ---------------------------------------------------------------------------------------------


def initialize_latents(batch_size=6, image_size=(32, 32), device='cpu'):
    H, W = image_size
    latents = []

    for i in range(batch_size):  # noqa: B007  (verbatim)
        noise = torch.randn(H, W) * 0.1

        for _ in range(2):
            y = np.random.randint(5, H-5)
            x = np.random.randint(5, W-5)
            size = np.random.randint(3, 7)

            yy, xx = torch.meshgrid(
                torch.arange(H) - y,
                torch.arange(W) - x,
                indexing='ij'
            )
            blob = torch.exp(-(yy**2 + xx**2) / (2 * size**2))
            noise += blob * np.random.uniform(0.5, 1.5)

        latents.append(noise)

    latents = torch.stack(latents).to(device)
    latents.requires_grad_(True)

    return latents


# ---------------------------------------------------------------------------------------------
# The seed's main run ("Run Optimization"), as a function
# ---------------------------------------------------------------------------------------------

SEED_WEIGHTS = {
    'sparsity': 0.1,
    'binary': 1.0,
    'tv': 0.05,
    'object_size': 2.0,
    'magnitude': 5.0,
    'contrastive': 2.0,
}


def seed_loop(latents, coherence_type='autocorr', *, weights=None, coherence_weight=2.0,
              num_steps=300, learning_rate=0.02):
    """The seed's optimization loop from a copy of ``latents``; returns (final latents, loss_history).

    Same operations in the same order as the notebook: zero_grad, the five shape losses, the
    contrastive loss, the chosen coherence loss, the weighted sum built with ``+=`` in the
    dict's order (``weights.get(name, 0.1)``), backward, Adam step, clamp to +-1.5.
    """
    weights = SEED_WEIGHTS if weights is None else weights
    latents = latents.detach().clone().requires_grad_(True)

    optimizer = torch.optim.Adam([latents], lr=learning_rate)

    loss_history = []
    coherence_history = []

    for step in range(num_steps):  # noqa: B007  (verbatim)
        optimizer.zero_grad()

        shape_losses = create_shape_losses(latents)
        contrast_loss = contrastive_shape_loss(latents)

        if coherence_type == 'autocorr':
            coherence_loss = coherence_loss_autocorr(latents)
        elif coherence_type == 'perimeter':
            coherence_loss = coherence_loss_perimeter(latents)
        elif coherence_type == 'morphological':
            coherence_loss = coherence_loss_morphological(latents)
        else:
            coherence_loss = torch.tensor(0.0)

        total_loss = 0
        for name, loss in shape_losses.items():
            total_loss += loss * weights.get(name, 0.1)
        total_loss += contrast_loss * weights.get('contrastive', 1.0)

        if coherence_type:
            total_loss += coherence_loss * coherence_weight

        total_loss.backward()
        optimizer.step()

        with torch.no_grad():
            latents.clamp_(-1.5, 1.5)

        loss_history.append(total_loss.item())
        coherence_history.append(coherence_loss.item() if coherence_type else 0.0)

    return latents.detach(), loss_history
