"""One registry of loss terms, read by ``Config``, ``optimize``, the CLI and the explorer.

A term is a plain function ``fn(latents, **params) -> scalar tensor`` over a batch
``[B, H, W]``. Registering it is one decorator::

    @register("my_term")
    def my_term(latents, *, strength=1.0):
        '''What it rewards, and why.'''
        return strength * latents.abs().mean()

Its keyword-only arguments (with defaults) are its parameters, settable per run through
``Config(params={"my_term": {"strength": 2.0}})``. After that, ``Config(weights={"my_term": 1.0})``,
``python -m shape_losses --weight my_term=1.0`` and the explorer's sliders all know it.

Kinds:

* ``"shape"``     - a per-pixel or per-image term, weighted through ``Config.weights``;
* ``"batch"``     - a term that compares the images of a batch (contrastive); also weighted
  through ``Config.weights``;
* ``"coherence"`` - one of them is chosen by ``Config.coherence`` and weighted by
  ``Config.coherence_weight``, as in the seed notebook.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

KINDS = ("shape", "batch", "coherence")

TermFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Term:
    """A registered loss term: its name, function, kind and parameter defaults."""

    name: str
    fn: TermFn
    kind: str
    seed: bool = False
    """True for the terms written exactly as in the seed notebook."""
    defaults: dict[str, Any] = field(default_factory=dict)
    fast: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    """Optional ``fast(latents, **params) -> (value, grad)``, used by ``engine='fast'``."""

    @property
    def doc(self) -> str:
        """The first paragraph of the term's docstring: what it rewards and why."""
        text = inspect.getdoc(self.fn) or ""
        return text.split("\n\n")[0].replace("\n", " ")

    def __call__(self, latents: torch.Tensor, **params: Any) -> torch.Tensor:
        return self.fn(latents, **params)


TERMS: dict[str, Term] = {}


def register(name: str | None = None, *, kind: str = "shape", seed: bool = False):
    """Decorator that adds ``fn`` to :data:`TERMS` under ``name`` (default: the function's name)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def decorate(fn: TermFn) -> TermFn:
        term_name = name or fn.__name__
        if term_name in TERMS:
            raise ValueError(f"a term named {term_name!r} is already registered")
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(f"term {term_name!r} must take the latents as its first argument")
        defaults = {}
        for p in params[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
                raise TypeError(
                    f"term {term_name!r}: parameter {p.name!r} must be keyword-only with a default"
                )
            defaults[p.name] = p.default
        TERMS[term_name] = Term(term_name, fn, kind, seed, defaults)
        return fn

    return decorate


def register_fast(name: str):
    """Decorator attaching a closed-form ``(value, grad)`` implementation to a registered term."""

    def decorate(fast_fn):
        term = get_term(name)
        TERMS[name] = Term(term.name, term.fn, term.kind, term.seed, term.defaults, fast_fn)
        return fast_fn

    return decorate


def unregister(name: str) -> None:
    """Remove a term (mainly for tests and experiments that register temporary terms)."""
    TERMS.pop(name, None)


def term_names(kind: str | None = None) -> list[str]:
    """Registered term names, optionally of one kind, in registration order."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [n for n, t in TERMS.items() if kind is None or t.kind == kind]


def weighted_term_names() -> list[str]:
    """Names that may appear in ``Config.weights`` (every term but the coherence ones)."""
    return [n for n, t in TERMS.items() if t.kind != "coherence"]


def coherence_names() -> list[str]:
    """Names that ``Config.coherence`` accepts (besides ``None``)."""
    return term_names("coherence")


def get_term(name: str) -> Term:
    """Look a term up by name; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return TERMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown term {name!r}; registered terms: {sorted(TERMS)}") from None
