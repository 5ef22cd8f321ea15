"""The seed notebook's losses and main optimisation loop, copied so the benchmarks time the real thing.

Source: ``shared/seed/shape_loss_experiment.md`` ("Loss Functions" and "Run Optimization").
The function bodies are the seed's (comments trimmed); ``seed_loop`` wraps the seed's main-run
loop in a function and drops its printing every 50 steps. It keeps the seed's two ``.item()``
calls per step (``loss_history`` and ``coherence_history``): they are part of the work the seed
does. A separate copy from ``tests/seed_reference.py`` so that benchmarks never import tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def create_shape_losses(latent):
    B, H, W = latent.shape
    losses = {}
    losses['sparsity'] = torch.mean(torch.abs(latent))
    distance_from_binary = torch.min(
        (latent - 1.0)**2,
        (latent + 1.0)**2
    )
    losses['binary'] = torch.mean(distance_from_binary)
    dx = torch.abs(latent[:, 1:, :] - latent[:, :-1, :])
    dy = torch.abs(latent[:, :, 1:] - latent[:, :, :-1])
    losses['tv'] = torch.mean(dx) + torch.mean(dy)
    threshold = 0.5
    binary_mask = (latent > threshold).float()
    bright_ratio = torch.mean(binary_mask)
    target_ratio = 0.2
    losses['object_size'] = (bright_ratio - target_ratio)**2
    magnitude = torch.mean(torch.abs(latent))
    min_magnitude = 0.3
    losses['magnitude'] = torch.relu(min_magnitude - magnitude)
    return losses


def coherence_loss_autocorr(latent):
    dx = latent[:, 1:, :] * latent[:, :-1, :]
    dy = latent[:, :, 1:] * latent[:, :, :-1]
    autocorr = torch.mean(dx) + torch.mean(dy)
    return -autocorr


def coherence_loss_perimeter(latent, threshold=0.5, temperature=0.1):
    binary_soft = torch.sigmoid((latent - threshold) / temperature)
    dx = torch.abs(binary_soft[:, 1:, :] - binary_soft[:, :-1, :])
    dy = torch.abs(binary_soft[:, :, 1:] - binary_soft[:, :, :-1])
    edge_length = torch.sum(dx) + torch.sum(dy)
    area = torch.sum(binary_soft) + 1e-6
    return edge_length / area


def coherence_loss_morphological(latent):
    latent_4d = latent.unsqueeze(1)
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


SEED_WEIGHTS = {
    'sparsity': 0.1,
    'binary': 1.0,
    'tv': 0.05,
    'object_size': 2.0,
    'magnitude': 5.0,
    'contrastive': 2.0,
}


def seed_loop(latents, coherence_type='autocorr', num_steps=300, learning_rate=0.02, weights=SEED_WEIGHTS,
              coherence_weight=2.0):
    """The seed's "Run Optimization" cell on a copy of ``latents``; returns (latents, loss_history)."""
    latents = latents.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latents], lr=learning_rate)
    loss_history = []
    coherence_history = []

    for _step in range(num_steps):
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
