"""``GuideMessenger``: a guide that runs the model itself, swapping each latent prior out.

At each latent sample site the handler receives the prior, already evaluated at this
run's upstream draws, and replaces it by whatever :meth:`GuideMessenger.get_posterior`
returns (a distribution, or a value). One run of the model therefore yields both traces:
the guide's (latent sites with their posteriors) and the model's (every site, with its
prior). The effect-based autoguides (``AutoNormalMessenger`` ...) build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..runtime import Message, Messenger
from .block import BlockMessenger
from .trace import Trace, _is_subsample

__all__ = ["GuideMessenger"]


def _hidden_from_guide_trace(msg: Message) -> bool:
    # Observed and deterministic sites belong to the model trace only. Subsample sites
    # stay visible: the model replayed against the guide trace must draw the same items.
    return msg.type == "sample" and msg.is_observed and not _is_subsample(msg)


class ModelRef:
    """Holds the model a guide is for, outside any module tree and outside pickles.

    The model sits in a one-element tuple so that a model that is an ``nn.Module`` is not
    registered as a submodule of a guide that is a module.
    """

    _model: tuple

    @property
    def model(self) -> Callable:
        """The model this guide is for."""
        return self._model[0]

    def __getstate__(self) -> dict:
        # Models are often local functions, which cannot be pickled.
        state = self.__dict__.copy()
        state["_model"] = (None,)
        return state


class GuideMessenger(ModelRef, Messenger):
    """Base class of guides written as handlers around the model (Pyro's ``GuideMessenger``).

    Subclasses define :meth:`get_posterior`. Calling the guide with the model's arguments
    runs the model with every latent site drawn from ``get_posterior(name, prior)`` and
    returns ``{name: value}`` for every sample site of the model (latent, observed and
    deterministic). Inside ``get_posterior``, :meth:`upstream_value` gives earlier values of
    the run, ``self.trace`` its sites so far and ``self.args_kwargs`` the model's arguments.
    """

    def __init__(self, model: Callable):
        if not callable(model):
            raise TypeError(
                f"{type(self).__name__}: model must be callable, got {type(model).__name__}"
            )
        Messenger.__init__(self)
        self._model = (model,)
        self.trace = Trace()

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the model with the latent sites drawn from the posterior."""
        self.args_kwargs = (args, kwargs)
        self.trace = Trace()
        try:
            with BlockMessenger(hide_fn=_hidden_from_guide_trace), self:
                self.model(*args, **kwargs)
        finally:
            del self.args_kwargs
        return {
            name: site.value
            for name, site in self.trace.nodes.items()
            if site.type == "sample" and not _is_subsample(site)
        }

    def _process_message(self, msg: Message) -> None:
        if msg.type != "sample" or msg.is_observed or _is_subsample(msg):
            return
        from ..distributions.delta import Delta

        prior = msg.fn
        msg.infer = dict(msg.infer)
        msg.infer["prior"] = prior
        posterior = self.get_posterior(msg.name, prior)
        if isinstance(posterior, torch.Tensor):
            posterior = Delta(posterior, event_dim=len(prior.event_shape))
        if posterior.batch_shape != prior.batch_shape:
            posterior = posterior.expand(prior.batch_shape)
        msg.fn = posterior

    def _postprocess_message(self, msg: Message) -> None:
        if msg.type != "sample":
            return
        prior = msg.infer.get("prior")
        if prior is not None and prior.batch_shape != msg.fn.batch_shape:
            # Outer plates broadcast the posterior after us; keep the prior in step.
            msg.infer["prior"] = prior.expand(msg.fn.batch_shape)
        self.trace.nodes[msg.name] = msg

    def get_posterior(self, name: str, prior: Any) -> Any:
        """The distribution (or a value) to draw site ``name`` from, given its prior.

        ``prior`` is evaluated at the upstream draws of this run.
        """
        raise NotImplementedError(f"{type(self).__name__} must define get_posterior(name, prior)")

    def upstream_value(self, name: str) -> torch.Tensor:
        """The value of the earlier site ``name`` of the current run."""
        try:
            return self.trace.nodes[name].value
        except KeyError:
            raise ValueError(
                f"{type(self).__name__}.upstream_value: no site {name!r} upstream; sites so "
                f"far: {list(self.trace.nodes)}"
            ) from None

    def get_traces(self) -> tuple[Trace, Trace]:
        """(model_trace, guide_trace) of the last call, from its single run of the model."""
        guide_trace, model_trace = Trace(), Trace()
        for name, site in self.trace.nodes.items():
            if site.type == "sample" and _is_subsample(site):
                continue
            model_site = site.copy()
            if site.type == "sample" and not site.is_observed:
                guide_trace.nodes[name] = site
                model_site.fn = site.infer["prior"]
            model_trace.nodes[name] = model_site
        return model_trace, guide_trace
