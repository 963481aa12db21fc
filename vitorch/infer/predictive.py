"""``Predictive``: draws from the posterior predictive distribution.

The model is run with its latent sites fixed (``condition``) to posterior samples, given as
a dict of tensors with one leading sample dim or drawn from a guide, and the values of its
sites are collected. With ``parallel=True`` all the draws are one run of the model inside an
extra plate, left of every plate of the model (its dim is found by tracing the model once);
otherwise the model runs once per draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..handlers.block import BlockMessenger
from ..handlers.condition import ConditionMessenger
from ..handlers.plate import PlateMessenger
from ..handlers.trace import Trace, TraceMessenger

__all__ = ["Predictive"]

_PLATE_NAME = "_num_predictive_samples"


def _is_subsample(site: Any) -> bool:
    return getattr(site.fn, "_is_subsample", False)


def _prototype(model: Callable, args: tuple, kwargs: dict) -> tuple[Trace, int]:
    """One run of ``model``, hidden from outer handlers, and the depth of its plates."""
    with BlockMessenger():
        trace = TraceMessenger(model).get_trace(*args, **kwargs)
    dims = [
        -frame.dim
        for site in trace.nodes.values()
        if site.type == "sample"
        for frame in site.cond_indep_stack
        if frame.dim is not None
    ]
    return trace, max(dims, default=0)


def _site_shapes(
    trace: Trace, num_samples: int, nesting: int, return_sites: Any, posterior_samples: dict
) -> dict[str, tuple[int, ...] | None]:
    """The output shape of each site to return: (num_samples, 1..., value shape)."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for name, site in trace.nodes.items():
        if site.type != "sample" or _is_subsample(site):
            continue
        if return_sites is None:
            wanted = True
        elif return_sites:
            wanted = name in return_sites
        else:
            wanted = name not in posterior_samples
        if wanted:
            pad = max(nesting - len(site.fn.batch_shape), 0)
            shapes[name] = (num_samples,) + (1,) * pad + tuple(site.value.shape)
    if return_sites is not None and "_RETURN" in return_sites:
        value = trace.nodes["_RETURN"].value
        shapes["_RETURN"] = (num_samples,) + tuple(value.shape) if torch.is_tensor(value) else None
    missing = set(return_sites or ()) - set(shapes)
    if missing:
        raise ValueError(
            f"Predictive: return_sites {sorted(missing)} are not sample sites of the model "
            f"(it has {sorted(n for n, s in trace.nodes.items() if s.type == 'sample')})"
        )
    return shapes


def _batched_samples(
    posterior_samples: dict, trace: Trace, num_samples: int, nesting: int
) -> dict[str, torch.Tensor]:
    """Posterior samples reshaped so that the sample dim sits at the predictive plate's dim."""
    out = {}
    for name, value in posterior_samples.items():
        site = trace.nodes.get(name)
        if site is None or site.type != "sample":
            continue  # e.g. a guide's auxiliary site: the model does not use it
        site_shape = tuple(site.value.shape)
        pad = max(nesting - len(site.fn.batch_shape), 0)
        target = (num_samples,) + (1,) * pad + site_shape
        if value.numel() == torch.Size(target).numel():
            out[name] = value.reshape(target)
        else:
            # Not the shape the model made here (e.g. a different data size): keep the
            # sample's own shape and only line its sample dim up with the plate.
            rest = tuple(value.shape[1:])
            out[name] = value.reshape((num_samples,) + (1,) * max(nesting - len(rest), 0) + rest)
    return out


def _collect(trace: Trace, shapes: dict) -> dict[str, Any]:
    out = {}
    for name, shape in shapes.items():
        value = trace.nodes[name].value
        if shape is None:
            out[name] = value
        elif value.numel() < torch.Size(shape).numel():
            out[name] = value.expand(shape)
        else:
            out[name] = value.reshape(shape)
    return out


def _predict(
    model: Callable,
    posterior_samples: dict,
    num_samples: int,
    return_sites: Any,
    parallel: bool,
    args: tuple,
    kwargs: dict,
) -> tuple[dict[str, Any], Any]:
    """(samples by site, the trace or list of traces) of ``model`` under the samples."""
    trace, nesting = _prototype(model, args, kwargs)
    shapes = _site_shapes(trace, num_samples, nesting, return_sites, posterior_samples)
    if parallel:
        data = _batched_samples(posterior_samples, trace, num_samples, nesting)

        def vectorized(*args: Any, **kwargs: Any) -> Any:
            with PlateMessenger(_PLATE_NAME, num_samples, dim=-nesting - 1):
                return model(*args, **kwargs)

        tr = TraceMessenger(ConditionMessenger(vectorized, data=data)).get_trace(*args, **kwargs)
        return _collect(tr, shapes), tr
    traces = []
    collected: dict[str, list] = {name: [] for name in shapes}
    for i in range(num_samples):
        data = {name: value[i] for name, value in posterior_samples.items()}
        tr = TraceMessenger(ConditionMessenger(model, data=data)).get_trace(*args, **kwargs)
        traces.append(tr)
        for name in shapes:
            collected[name].append(tr.nodes[name].value)
    samples: dict[str, Any] = {}
    for name, shape in shapes.items():
        values = collected[name]
        samples[name] = values if shape is None else torch.stack(values).reshape(shape)
    return samples, traces


class Predictive(torch.nn.Module):
    """Samples from the posterior predictive distribution of ``model``.

    :param model: the model.
    :param posterior_samples: ``{site: tensor}`` with the draws along dim 0; the model's
        latent sites named here are fixed to them.
    :param guide: draw the latent sites from this guide instead (not with
        ``posterior_samples``).
    :param num_samples: the number of draws (taken from ``posterior_samples`` if given).
    :param return_sites: the sites to return. By default every sample site not in
        ``posterior_samples`` (with a guide: every sample site of the model, latent and
        observed); ``"_RETURN"`` adds the model's return value.
    :param parallel: draw all samples in one run of the model, vectorized by an extra
        plate; needs every batch dim of the model to be declared by a plate.

    Calling it with the model's arguments returns ``{site: tensor}``, each of shape
    ``(num_samples, ...)`` where ``...`` is the site's shape, with dims of size one inserted
    after the sample dim when the site lies in fewer plates than the deepest one.

    Example:
        >>> import torch, vitorch
        >>> import vitorch.distributions as dist
        >>> def model():
        ...     z = vitorch.sample("z", dist.Normal(0.0, 1.0))
        ...     return vitorch.sample("x", dist.Normal(z, 1.0))
        >>> samples = Predictive(model, {"z": torch.zeros(5)})()
        >>> samples["x"].shape
        torch.Size([5])
    """

    def __init__(
        self,
        model: Callable,
        posterior_samples: dict[str, torch.Tensor] | None = None,
        guide: Callable | None = None,
        num_samples: int | None = None,
        return_sites: Any = (),
        parallel: bool = False,
    ):
        super().__init__()
        if not callable(model):
            raise TypeError(f"Predictive: model must be callable, got {type(model).__name__}")
        if guide is not None and not callable(guide):
            raise TypeError(f"Predictive: guide must be callable, got {type(guide).__name__}")
        if posterior_samples is None:
            if num_samples is None:
                raise ValueError("Predictive: give posterior_samples or num_samples")
            posterior_samples = {}
        if not isinstance(posterior_samples, dict):
            raise TypeError(
                f"Predictive: posterior_samples must be a dict from site name to tensor, "
                f"got {type(posterior_samples).__name__}"
            )
        if guide is not None and posterior_samples:
            raise ValueError("Predictive: give posterior_samples or guide, not both")
        for name, value in posterior_samples.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                raise ValueError(
                    f"Predictive: posterior_samples[{name!r}] must be a tensor with a leading "
                    f"sample dim, got {getattr(value, 'shape', type(value).__name__)}"
                )
            if num_samples is None:
                num_samples = value.shape[0]
            elif num_samples != value.shape[0]:
                warnings.warn(
                    f"Predictive: posterior_samples[{name!r}] has {value.shape[0]} draws but "
                    f"num_samples={num_samples}; using {value.shape[0]}",
                    UserWarning,
                    stacklevel=2,
                )
                num_samples = value.shape[0]
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"Predictive: num_samples must be a positive int, got {num_samples!r}")
        if return_sites is not None and not isinstance(return_sites, (list, tuple, set, frozenset)):
            raise TypeError(
                f"Predictive: return_sites must be a list, tuple or set of site names (or "
                f"None for all), got {type(return_sites).__name__}"
            )
        self.model = model
        self.posterior_samples = posterior_samples
        self.guide = guide
        self.num_samples = num_samples
        self.return_sites = return_sites
        self.parallel = parallel

    def _posterior_samples(self, args: tuple, kwargs: dict) -> tuple[dict, Any]:
        if self.guide is None:
            return self.posterior_samples, self.return_sites
        samples, _ = _predict(self.guide, {}, self.num_samples, None, self.parallel, args, kwargs)
        # With a guide, every model site is returned unless told otherwise.
        return samples, (self.return_sites or None)

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw ``num_samples`` predictive samples given the model's arguments."""
        posterior_samples, return_sites = self._posterior_samples(args, kwargs)
        samples, _ = _predict(
            self.model,
            posterior_samples,
            self.num_samples,
            return_sites,
            self.parallel,
            args,
            kwargs,
        )
        return samples

    def get_samples(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The same as calling the Predictive (Pyro's older name)."""
        return self.forward(*args, **kwargs)

    @torch.no_grad()
    def get_vectorized_trace(self, *args: Any, **kwargs: Any) -> Trace:
        """One trace of the model with all draws vectorized by the extra plate."""
        posterior_samples, _ = self._posterior_samples(args, kwargs)
        _, trace = _predict(self.model, posterior_samples, self.num_samples, (), True, args, kwargs)
        return trace
