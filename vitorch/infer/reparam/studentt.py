"""``StudentTReparam``: a Student-t site as a Normal given a Gamma precision factor."""

from __future__ import annotations

from ...distributions import Gamma, Normal, StudentT
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["StudentTReparam"]


class StudentTReparam(Reparam):
    """Write ``StudentT(df, loc, scale)`` as the scale mixture
    ``Normal(loc, scale / sqrt(g))`` with ``g ~ Gamma(df / 2, df / 2)`` sampled at
    ``{name}_gamma``.

    Conditionally on ``g`` the site is Gaussian (useful with Gaussian-structured
    inference). Works for latent and observed sites; the site keeps its value.
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample ``{name}_gamma`` and return the site as the conditional Normal."""
        name = msg["name"]
        fn, event_dim = self._unwrap(msg["fn"])
        if not isinstance(fn, StudentT):
            raise ValueError(
                f"StudentTReparam at site {name!r}: expected a StudentT (optionally "
                f"wrapped in Independent), got {type(fn).__name__}"
            )
        half_df = 0.5 * fn.df
        gamma = self._sample_aux(
            f"{name}_gamma", self._wrap(Gamma(half_df, half_df), event_dim), None, False
        )
        new_fn = self._wrap(Normal(fn.loc, fn.scale * gamma.rsqrt()), event_dim)
        return {"fn": new_fn, "value": msg["value"], "is_observed": msg["is_observed"]}
