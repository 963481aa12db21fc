"""``GumbelSoftmaxReparam``: a relaxed one-hot latent from parameter-free uniform noise."""

from __future__ import annotations

import torch

from ...distributions import Uniform
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["GumbelSoftmaxReparam"]


class GumbelSoftmaxReparam(Reparam):
    """Sample ``{name}_uniform ~ Uniform(0, 1)`` (one per category) and return the site as
    ``softmax((logits + g) / temperature)`` with the Gumbel noise ``g = -log(-log u)``,
    which is ``RelaxedOneHotCategorical(temperature, logits)``.

    A multimodal posterior over the simplex becomes a unimodal one over the noise, at the
    cost of one more dim per event. Latent sites only.
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample ``{name}_uniform`` and return the site as its Gumbel-softmax image."""
        name = msg["name"]
        value = msg["value"]
        if msg["is_observed"]:
            raise NotImplementedError(
                f"GumbelSoftmaxReparam at site {name!r}: observed sites are not supported"
            )
        fn, event_dim = self._unwrap(msg["fn"])
        if not isinstance(fn, torch.distributions.RelaxedOneHotCategorical):
            raise ValueError(
                f"GumbelSoftmaxReparam at site {name!r}: expected a RelaxedOneHotCategorical "
                f"(optionally wrapped in Independent), got {type(fn).__name__}"
            )
        logits = fn.logits
        u = None
        if value is not None:
            # The noise that gives back ``value`` (up to the softmax's shift invariance).
            gumbel = value.log() * fn.temperature - logits
            u = (-(-gumbel).exp()).exp()
        u = self._sample_aux(
            f"{name}_uniform",
            self._wrap(Uniform(torch.zeros_like(logits), torch.ones_like(logits)), event_dim),
            u,
            False,
        )
        if value is None:
            gumbel = -(-u.log()).log()
            value = ((logits + gumbel) / fn.temperature).softmax(-1)
        return self._deterministic_result(value, event_dim)
