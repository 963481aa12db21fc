"""``TraceGraph_ELBO``: the ELBO with Rao-Blackwellized score-function gradients.

``Trace_ELBO`` gives each guide site that cannot be reparameterized the learning signal
``log q(z) * (every ELBO term)``. Terms that come before ``z`` cannot depend on its draw,
so they only add noise; ``TraceGraph_ELBO`` keeps, for each such site, only its
*downstream cost*: the terms of the sites that may depend on ``z``, optionally minus a
baseline. Its value is the same estimate of the ELBO as ``Trace_ELBO``'s.

Which sites may depend on ``z`` follows Pyro's "dense" dependency graphs of the guide and
the model: within one program, every sample site depends on every earlier one, except that
two sites in different iterations of the same sequential ``plate`` are independent. The
downstream sites of ``z`` are ``z`` and its descendants in the guide's graph (their model
and guide terms), plus the model sites that are children, in the model's graph, of any of
those (their model terms only). Inside a vectorized plate each item of ``z`` gets only the
terms of its own item, as in ``Trace_ELBO``.

Recent Pyro releases (1.9) find the dependents of ``z`` by tracking which tensors carry its
value instead. Both rules give unbiased gradients; they differ where a site comes after
``z`` without using it (a plate of local sites after a global discrete one): the dense
rule keeps those terms in ``z``'s cost, provenance tracking drops them and is a little
less noisy there.

Baselines come from the site's ``infer`` dict, as in Pyro::

    infer={"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.95}}
    infer={"baseline": {"nn_baseline": module, "nn_baseline_input": features}}
    infer={"baseline": {"baseline_value": tensor}}

``use_decaying_avg_baseline`` may be combined with one of the other two (the baselines
add up); ``nn_baseline`` and ``baseline_value`` exclude each other. A neural or
user-computed baseline is trained by adding ``(baseline - cost) ** 2`` to the loss, whose
gradient reaches the module's parameters (register the module with ``vitorch.module``
in the guide so that SVI steps them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from ..handlers.trace import Trace
from ..runtime import Message
from .elbo import (
    ELBO,
    Trace_ELBO,
    _all_reparameterized,
    _counts,
    _scaled_total,
    _sum_to,
    _total,
    _warn_missing,
)

__all__ = ["JitTraceGraph_ELBO", "TraceGraph_ELBO"]

_BASELINE_KEYS = (
    "use_decaying_avg_baseline",
    "baseline_beta",
    "nn_baseline",
    "nn_baseline_input",
    "baseline_value",
)
_DEFAULT_BETA = 0.9  # Pyro's default decay of the running-average baseline


class _Baseline(NamedTuple):
    decaying_avg: bool
    beta: float
    nn: Callable | None
    nn_input: Any
    value: torch.Tensor | None


def _baseline_options(site: Message) -> _Baseline | None:
    """The validated ``infer["baseline"]`` options of a guide site, or None when it has none."""
    name = site.name
    options = site.infer.get("baseline")
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(
            f"sample site {name!r}: infer['baseline'] must be a dict of baseline options, "
            f"got {type(options).__name__}"
        )
    unknown = [k for k in options if k not in _BASELINE_KEYS]
    if unknown:
        raise ValueError(
            f"sample site {name!r}: unknown baseline option(s) {unknown}; expected keys "
            f"among {list(_BASELINE_KEYS)}"
        )
    decaying_avg = options.get("use_decaying_avg_baseline", False)
    if not isinstance(decaying_avg, bool):
        raise TypeError(
            f"sample site {name!r}: baseline option 'use_decaying_avg_baseline' must be a "
            f"bool, got {decaying_avg!r}"
        )
    beta = options.get("baseline_beta", _DEFAULT_BETA)
    if isinstance(beta, torch.Tensor) and beta.numel() == 1:
        beta = float(beta)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ValueError(
            f"sample site {name!r}: baseline option 'baseline_beta' must be a number in "
            f"[0, 1], got {beta!r}"
        )
    nn = options.get("nn_baseline")
    nn_input = options.get("nn_baseline_input")
    value = options.get("baseline_value")
    if nn is not None and value is not None:
        raise ValueError(
            f"sample site {name!r}: baseline options 'nn_baseline' and 'baseline_value' "
            f"were both given; use one of them"
        )
    if nn is not None:
        if not callable(nn):
            raise TypeError(
                f"sample site {name!r}: baseline option 'nn_baseline' must be a callable "
                f"(a torch.nn.Module), got {type(nn).__name__}"
            )
        if nn_input is None:
            raise ValueError(
                f"sample site {name!r}: baseline option 'nn_baseline' needs "
                f"'nn_baseline_input' (the tensor the module is called with)"
            )
    elif nn_input is not None:
        raise ValueError(
            f"sample site {name!r}: baseline option 'nn_baseline_input' was given without "
            f"'nn_baseline'"
        )
    if value is not None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = torch.tensor(float(value))
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"sample site {name!r}: baseline option 'baseline_value' must be a tensor, "
                f"got {type(value).__name__}"
            )
    if not decaying_avg and nn is None and value is None:
        return None
    return _Baseline(decaying_avg, float(beta), nn, nn_input, value)


# -- the dependency structure ----------------------------------------------------------------
_SeqKey = tuple[tuple[str, int], ...]


def _seq_key(site: Message) -> _SeqKey:
    """The sequential-plate iterations the site is in, as (plate name, item) pairs."""
    return tuple((f.name, f.counter) for f in site.cond_indep_stack if f.dim is None)


def _may_depend(a: _SeqKey, b: _SeqKey) -> bool:
    """False when the sites are in different iterations of one sequential plate."""
    if not a or not b:
        return True
    for name, counter in a:
        for other, other_counter in b:
            if name == other and counter != other_counter:
                return False
    return True


class _Scan:
    """Sites met so far along one program: does a new site depend on any of them?"""

    __slots__ = ("keys", "free")

    def __init__(self) -> None:
        self.keys: list[_SeqKey] = []
        # A site in no sequential plate is a parent of every later site.
        self.free = False

    def add(self, key: _SeqKey) -> None:
        if not key:
            self.free = True
        elif not self.free and key not in self.keys:
            self.keys.append(key)

    def reaches(self, key: _SeqKey) -> bool:
        return self.free or any(_may_depend(k, key) for k in self.keys)


def _graph_nodes(trace: Trace) -> list[tuple[str, _SeqKey]]:
    return [
        (name, _seq_key(site))
        for name, site in trace.nodes.items()
        if site.type == "sample" and not getattr(site.fn, "_is_subsample", False)
    ]


def _downstream_sites(
    model_trace: Trace, guide_trace: Trace, names: list[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """For each guide site in ``names``: (guide sites downstream, further model sites).

    The first list holds the site itself and its descendants in the guide's dense graph,
    in guide order; the second the model sites, not among those, that follow any of
    them in the model's dense graph, in model order.
    """
    guide_nodes = _graph_nodes(guide_trace)
    model_nodes = _graph_nodes(model_trace)
    position = {name: i for i, (name, _) in enumerate(guide_nodes)}
    result: dict[str, tuple[list[str], list[str]]] = {}
    for name in names:
        start = position[name]
        scan = _Scan()
        scan.add(guide_nodes[start][1])
        downstream = [name]
        for other, key in guide_nodes[start + 1 :]:
            if scan.reaches(key):
                downstream.append(other)
                scan.add(key)
        members = set(downstream)
        scan = _Scan()
        children = []
        for other, key in model_nodes:
            if other in members:
                scan.add(key)
            elif scan.reaches(key):
                children.append(other)
        result[name] = (downstream, children)
    return result


# -- the estimator -----------------------------------------------------------------------
class TraceGraph_ELBO(ELBO):
    """The ELBO whose score-function terms use only each site's downstream cost (Pyro's).

    Same arguments and value as :class:`~vitorch.infer.Trace_ELBO`. For each guide sample
    site ``z`` without ``rsample``, the gradient estimate uses
    ``grad log q(z) * (downstream cost of z - baseline)``, where the downstream cost is the
    sum of the ELBO terms of the sites that may depend on ``z`` (see the module docstring);
    reparameterized sites get the pathwise gradient, exactly as in ``Trace_ELBO``.

    The running averages of ``use_decaying_avg_baseline`` are kept on this object, in
    ``baseline_averages`` (site name -> tensor of the downstream cost's shape), rather
    than in the param store as Pyro does: they are statistics, not parameters, and stay
    out of checkpoints and optimizers. An average is updated only by evaluations that
    build gradients (not by :meth:`loss`) and only when the loss is finite.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        # The ELBO base class's arguments (num_particles, max_plate_nesting, ...).
        super().__init__(*args, **kwargs)
        self.baseline_averages: dict[str, torch.Tensor] = {}
        # Averages computed during the current evaluation; committed once it succeeded,
        # so that a non-finite step does not poison them.
        self._pending_averages: dict[str, torch.Tensor] | None = None

    # Trace_ELBO._particle reads this (TraceMeanField_ELBO sets it); no analytic KL here.
    _analytic_kl = False

    def _evaluate(self, model, guide, args, kwargs, check_new_obs: bool):
        self._pending_averages = {}
        try:
            result = super()._evaluate(model, guide, args, kwargs, check_new_obs)
            self.baseline_averages.update(self._pending_averages)
            return result
        finally:
            self._pending_averages = None

    def _particle(self, model_trace: Trace, guide_trace: Trace):
        guide_nodes = guide_trace.nodes
        if _all_reparameterized(guide_nodes):
            # No score-function terms: exactly Trace_ELBO's estimate and gradient.
            return Trace_ELBO._particle(self, model_trace, guide_trace)  # type: ignore[arg-type]
        # The same terms, in the same order, as Trace_ELBO: the value is the same float.
        terms: list = []
        for site in model_trace.nodes.values():
            if site.type == "sample" and _counts(site):
                terms.append(_scaled_total(site))
        nonreparam: list[tuple[Message, _Baseline | None]] = []
        for name, site in guide_nodes.items():
            if site.type != "sample" or site.is_observed or not _counts(site):
                continue
            if name not in model_trace.nodes:
                _warn_missing(name, site)
            terms.append(-_scaled_total(site))
            if not site.fn.has_rsample:
                nonreparam.append((site, _baseline_options(site)))
        elbo = _total(terms)
        if not torch.is_grad_enabled() or not isinstance(elbo, torch.Tensor):
            return elbo, elbo  # a value-only evaluation (``loss``): no surrogate needed
        return elbo, self._surrogate(elbo, nonreparam, model_trace, guide_trace)

    def _surrogate(
        self,
        elbo: torch.Tensor,
        nonreparam: list[tuple[Message, _Baseline | None]],
        model_trace: Trace,
        guide_trace: Trace,
    ) -> torch.Tensor:
        """``elbo`` plus score-function terms (zero in value) minus the baselines' losses."""
        model_terms = {}
        for name, site in model_trace.nodes.items():
            if site.type == "sample" and _counts(site) and site.log_prob is not None:
                model_terms[name] = (site.log_prob.detach(), site.cond_indep_stack)
        guide_terms = {}
        for name, site in guide_trace.nodes.items():
            if (
                site.type == "sample"
                and not site.is_observed
                and _counts(site)
                and site.log_prob is not None
            ):
                guide_terms[name] = (-site.log_prob.detach(), site.cond_indep_stack)
        structure = _downstream_sites(model_trace, guide_trace, [s.name for s, _ in nonreparam])
        extra: Any = 0.0
        baseline_loss: Any = 0.0
        for site, options in nonreparam:
            target = site.cond_indep_stack
            downstream, children = structure[site.name]
            parts = []
            for name in downstream:
                for table in (model_terms, guide_terms):
                    term = table.get(name)
                    if term is not None:
                        parts.append(_sum_to(term[0], term[1], target))
            for name in children:
                term = model_terms.get(name)
                if term is not None:
                    parts.append(_sum_to(term[0], term[1], target))
            cost = sum(parts[1:], parts[0])
            # Leading size-1 dims come from summing; Pyro's costs have none, and a
            # user's baseline is shaped like Pyro's.
            while cost.dim() and cost.shape[0] == 1:
                cost = cost.squeeze(0)
            signal = cost
            if options is not None:
                baseline, regression = self._baseline(site.name, options, cost)
                signal = cost - baseline.detach()
                if regression is not None:
                    baseline_loss = baseline_loss + regression
            # The score is that of the distribution the value was drawn from: neither
            # the plate scale (it is in the cost) nor a mask (which hides the site's
            # own term, not its influence on later sites) applies to it.
            score = site.unscaled_log_prob if site.mask is None else site.fn.log_prob(site.value)
            extra = extra + (score * signal).sum()
            # Cancels the gradient of the site's own -log q term in ``elbo``: the cost
            # already accounts for it, and its expectation is zero anyway.
            extra = extra + site.log_prob_sum
        surrogate = elbo + (extra - extra.detach())
        if isinstance(baseline_loss, torch.Tensor):
            # Zero in value: the surrogate stays equal to the ELBO.
            surrogate = surrogate - (baseline_loss - baseline_loss.detach())
        return surrogate

    def _baseline(
        self, name: str, options: _Baseline, cost: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(baseline, its regression loss or None) for the downstream ``cost`` of site ``name``."""
        baseline: Any = 0.0
        if options.decaying_avg:
            pending = self._pending_averages
            old = pending.get(name) if pending is not None else None
            if old is None:
                old = self.baseline_averages.get(name)
            if old is None:
                old = torch.zeros_like(cost)
            elif old.shape != cost.shape:
                raise ValueError(
                    f"sample site {name!r}: the decaying-average baseline has shape "
                    f"{tuple(old.shape)} but the downstream cost now has shape "
                    f"{tuple(cost.shape)}; clear elbo.baseline_averages[{name!r}] after "
                    f"changing particles or plate sizes"
                )
            new = options.beta * old + (1.0 - options.beta) * cost
            if pending is not None:
                pending[name] = new
            else:
                self.baseline_averages[name] = new
            baseline = old
        regress = False
        if options.nn is not None:
            nn_input = options.nn_input
            if isinstance(nn_input, torch.Tensor):
                # Only the baseline's loss trains the module; the input is data to it.
                nn_input = nn_input.detach()
            baseline = baseline + options.nn(nn_input)
            regress = True
        elif options.value is not None:
            baseline = baseline + options.value
            regress = True
        baseline = torch.as_tensor(baseline)
        try:
            shape = torch.broadcast_shapes(baseline.shape, cost.shape)
        except RuntimeError:
            shape = None
        if shape != cost.shape:
            raise ValueError(
                f"sample site {name!r}: the baseline has shape {tuple(baseline.shape)}, "
                f"expected the downstream cost's shape {tuple(cost.shape)} (or one that "
                f"broadcasts to it)"
            )
        regression = ((cost - baseline) ** 2).sum() if regress else None
        return baseline, regression


# Pyro's JIT variant exists to cut Python overhead; vitorch's ELBOs run without tracing,
# so code that asks for it gets the plain one.
JitTraceGraph_ELBO = TraceGraph_ELBO
