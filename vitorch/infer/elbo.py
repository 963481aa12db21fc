"""Evidence lower bounds: ``Trace_ELBO`` and ``TraceMeanField_ELBO``.

One particle of the ELBO is built from two traces: the guide run under ``trace``, then the
model run under ``trace(replay(model, guide_trace))`` so that it sees the guide's draws.
The estimate is ``sum_model scale * log p - sum_guide scale * log q``. Guide sites that
cannot be reparameterized add a score-function (REINFORCE) term to a surrogate objective,
so that its gradient stays unbiased while its value equals the ELBO.

Vectorized particles are one more plate, outside every plate of the model, at dim
``-(max_plate_nesting + 1)``; the particle dimension is averaged out at the end.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Distribution, Independent, constraints
from torch.distributions.kl import _dispatch_kl, kl_divergence

from ..handlers.block import BlockMessenger
from ..handlers.plate import PlateMessenger
from ..handlers.replay import ReplayMessenger
from ..handlers.trace import Trace, TraceMessenger, _is_one, _is_subsample, site_log_prob
from ..handlers.trace import store_log_prob as _scaled_sum
from ..params import record_params
from ..runtime import Message
from ..util import check_model_guide_match, check_site_shape

__all__ = [
    "ELBOModule",
    "ELBO",
    "JitTraceMeanField_ELBO",
    "JitTrace_ELBO",
    "NonFiniteLossError",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
]


class NonFiniteLossError(ValueError):
    """The loss is NaN or infinite; ``sites`` names the sites whose log-density is not finite."""

    def __init__(self, message: str, sites: list[str]):
        super().__init__(message)
        self.sites = sites


class _Skipped:
    """Falsy stand-in for ``Distribution._validate_args`` during validated-once steps."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<validation skipped for this step>"


_SKIPPED = _Skipped()


def _validation_switched_off(fn: Any) -> bool:
    """True when the user built ``fn`` (or a distribution it wraps) with validate_args=False."""
    while fn is not None:
        if getattr(fn, "__dict__", {}).get("_validate_args") is False:
            return True
        fn = getattr(fn, "base_dist", None)
    return False


def _obviously_valid(fn: Any, value: Any) -> bool:
    """True when ``value`` is a valid observation of ``fn``, proved by a cheaper test.

    For 0/1 data (Bernoulli) and counts (Poisson, ...) held in a float tensor of ``fn``'s
    exact shape, range and integrality take one comparison with the value rounded and
    clamped, instead of torch's several elementwise passes; False means "not proved"
    (torch's check then decides and words the error).
    """
    if not (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.numel() > 0
        and value.shape == fn.batch_shape + fn.event_shape
    ):
        return False
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.boolean:
        upper = 1.0
    elif support is constraints.nonnegative_integer:
        upper = torch.finfo(value.dtype).max  # finite: inf is not a count
    else:
        return False
    # value equals itself rounded into [0, upper] exactly when every entry is an integer
    # in range; NaN equals nothing, so it is never proved valid here.
    return torch.equal(value, value.round().clamp_(0.0, upper))


def _counts(site: Message) -> bool:
    """Of sample sites, those that carry a log-density: not plate indices, not deterministic."""
    return not (getattr(site.fn, "_is_subsample", False) or site.infer.get("_deterministic", False))


class ELBO:
    """Base class: particles, plate nesting, and the loss / gradient entry points."""

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = False,
        strict_enumeration_warning: bool = True,
        ignore_jit_warnings: bool = False,
        retain_graph: bool | None = None,
        **kwargs: Any,
    ):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if max_plate_nesting != math.inf and (
            not isinstance(max_plate_nesting, int) or max_plate_nesting < 0
        ):
            raise ValueError(
                f"max_plate_nesting must be a non-negative int, got {max_plate_nesting!r}"
            )
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.vectorize_particles = vectorize_particles
        self.retain_graph = retain_graph
        # The (model, guide) pairs that have passed one fully validated evaluation: one
        # ELBO object may serve several models, and each is validated once.
        self._validated: set = set()
        self._validated_obs: dict[str, torch.Tensor] = {}

    # -- traces ----------------------------------------------------------------------------
    def _guess_max_plate_nesting(self, model: Callable, guide: Callable, args, kwargs) -> None:
        # Run once, hidden from outer handlers, to see how deep the plates go.
        with BlockMessenger():
            guide_trace, model_trace = self._trace_pair(model, guide, args, kwargs)
        dims = [
            -frame.dim
            for tr in (guide_trace, model_trace)
            for site in tr.nodes.values()
            if site.type == "sample"
            for frame in site.cond_indep_stack
            if frame.dim is not None
        ]
        self.max_plate_nesting = max(dims, default=0)

    @staticmethod
    def _trace_pair(model: Callable, guide: Callable, args, kwargs) -> tuple[Trace, Trace]:
        guide_tracer = TraceMessenger()
        with guide_tracer:
            guide(*args, **kwargs)
        model_tracer = TraceMessenger()
        with model_tracer, ReplayMessenger(trace=guide_tracer.trace):
            model(*args, **kwargs)
        return guide_tracer.trace, model_tracer.trace

    def _get_traces(self, model: Callable, guide: Callable, args, kwargs):
        """Yield (model_trace, guide_trace) per particle (one pair when vectorized)."""
        if self.vectorize_particles and self.num_particles > 1:
            if self.max_plate_nesting == math.inf:
                self._guess_max_plate_nesting(model, guide, args, kwargs)
            particles = PlateMessenger(
                "num_particles_vectorized",
                self.num_particles,
                dim=-(int(self.max_plate_nesting) + 1),
            )
            with particles:
                guide_trace, model_trace = self._trace_pair(model, guide, args, kwargs)
            if Distribution._validate_args:
                self._check_structure(model_trace, guide_trace, self.max_plate_nesting + 1)
            yield model_trace, guide_trace
        else:
            for _ in range(self.num_particles):
                guide_trace, model_trace = self._trace_pair(model, guide, args, kwargs)
                if Distribution._validate_args:
                    self._check_structure(model_trace, guide_trace, self.max_plate_nesting)
                yield model_trace, guide_trace

    @staticmethod
    def _check_structure(model_trace: Trace, guide_trace: Trace, max_plate_nesting) -> None:
        """Pyro's validation of a trace pair: site shapes against their plates, and model
        against guide. Runs on validated evaluations only (the first, under vitorch's
        validate-once rule), so it costs nothing per step afterwards."""
        # Model against guide first, as in Pyro: a guide site of the wrong shape is named
        # as such rather than by the broadcast it causes in the model.
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
        enumerated = any(
            site.infer.get("_enumerate_dim") is not None for site in model_trace.nodes.values()
        )
        if not enumerated:  # enumeration dims sit left of the plates: TraceEnum checks those
            for tr in (model_trace, guide_trace):
                for site in tr.nodes.values():
                    if site.type == "sample" and not _is_subsample(site):
                        check_site_shape(site, max_plate_nesting)

    # -- estimates -------------------------------------------------------------------------
    def _particle(self, model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, Any]:
        """(elbo estimate, surrogate for gradients) of one particle (or vectorized batch)."""
        raise NotImplementedError

    def _divisor(self) -> int:
        return self.num_particles

    def _loss_and_params(self, model, guide, args, kwargs):
        """The differentiable loss, its value as a float, and the params the traces touched.

        Validation is paid for once per (model, guide). The first evaluation runs with distribution
        validation as configured (``vitorch.enable_validation``); once it has passed,
        later evaluations switch torch's per-distribution argument and support checks
        off, because they repeat on every step what the first one established. Two
        checks stay: an observed value that is a new tensor is checked against its
        distribution's support, and a parameter that drifts out of range makes the
        loss non-finite, which raises :class:`NonFiniteLossError` naming the site.
        """
        try:
            key: Any = (model, guide)
            validated = key in self._validated
        except TypeError:  # an unhashable model or guide: validate every time
            key, validated = None, False
        if validated and Distribution._validate_args:
            # A falsy marker rather than False: torch's expand() copies the default into
            # each expanded instance, and the marker keeps "off for this step" apart from
            # a user's explicit validate_args=False (see _validation_switched_off).
            Distribution._validate_args = _SKIPPED  # type: ignore[assignment]
            try:
                return self._evaluate(model, guide, args, kwargs, check_new_obs=True)
            finally:
                Distribution._validate_args = True
        result = self._evaluate(model, guide, args, kwargs, check_new_obs=False)
        if key is not None and Distribution._validate_args:
            self._validated.add(key)
        return result

    def _check_new_observations(self, model_trace: Trace, validate: bool) -> None:
        """Check observed values not seen before (or just remember them, on a full pass)."""
        seen = self._validated_obs
        for name, site in model_trace.nodes.items():
            if not site.is_observed or site.type != "sample" or seen.get(name) is site.value:
                continue
            if not _counts(site) or not isinstance(site.value, torch.Tensor):
                continue
            if not validate or _validation_switched_off(site.fn):
                seen[name] = site.value
                continue
            try:
                if not _obviously_valid(site.fn, site.value):
                    site.fn._validate_sample(site.value)
            except NotImplementedError:
                pass  # a distribution without a declared support
            except (ValueError, RuntimeError) as err:
                raise ValueError(f"sample site {name!r}: invalid observation: {err}") from None
            seen[name] = site.value

    def _evaluate(self, model, guide, args, kwargs, check_new_obs: bool):
        # check_new_obs: validation is off for this step; check new observed tensors here.
        elbos, surrogates = [], []
        param_names: dict[str, Any] = {}
        traces = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            self._check_new_observations(model_trace, validate=check_new_obs)
            elbo, surrogate = self._particle(model_trace, guide_trace)
            elbos.append(elbo)
            surrogates.append(surrogate)
            record_params(param_names, guide_trace, model_trace)
            traces.append((model_trace, guide_trace))
        # One particle (the usual case) adds no autograd node here.
        elbo_total = elbos[0] if len(elbos) == 1 else _total(elbos)
        surrogate_total = surrogates[0] if len(surrogates) == 1 else _total(surrogates)
        n = self._divisor()
        if n != 1:
            elbo_total = elbo_total / n
            surrogate_total = surrogate_total / n
        loss_value = (
            -elbo_total.item() if isinstance(elbo_total, torch.Tensor) else -float(elbo_total)
        )
        if not math.isfinite(loss_value):
            raise _nonfinite_error(loss_value, traces)
        return -surrogate_total, loss_value, param_names

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The negative ELBO, as a float (no gradients)."""
        with torch.no_grad():
            _, value, _ = self._loss_and_params(model, guide, args, kwargs)
        return value

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        """The negative ELBO as a tensor whose gradient is an unbiased ELBO gradient."""
        surrogate, value, _ = self._loss_and_params(model, guide, args, kwargs)
        if isinstance(surrogate, torch.Tensor):
            # Value of the ELBO, gradient of the surrogate (they differ only with
            # non-reparameterized sites).
            return surrogate + (value - surrogate.detach())
        return torch.tensor(value)

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Compute the loss, backpropagate into the touched parameters, return the loss."""
        surrogate, value, _ = self._loss_and_params(model, guide, args, kwargs)
        if isinstance(surrogate, torch.Tensor) and surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        return value

    def __call__(self, model: Callable, guide: Callable) -> ELBOModule:
        """The loss of ``(model, guide)`` as an ``nn.Module`` (Pyro's interface for torch's
        tooling): ``elbo = Trace_ELBO()(model, guide)``, then ``elbo.parameters()`` for a
        torch optimizer and ``elbo(*args)`` for the differentiable loss. With
        ``vitorch.settings.set(module_local_params=True)`` the parameters are the modules'
        own, so engines built around ``nn.Module`` (Lightning, DDP) drive the training.
        """
        return ELBOModule(model, guide, self)


class ELBOModule(torch.nn.Module):
    """``(model, guide, elbo)`` as an ``nn.Module``; calling it gives the differentiable loss.

    Modules among ``model`` and ``guide`` are submodules, so ``parameters()``,
    ``state_dict()`` and ``.to(device)`` cover them.
    """

    def __init__(self, model: Callable, guide: Callable, elbo: ELBO):
        super().__init__()
        for name, value in (("model", model), ("guide", guide)):
            if not callable(value):
                raise TypeError(
                    f"ELBO()(model, guide): {name} must be callable, got {type(value).__name__}"
                )
        self.model = model
        self.guide = guide
        self.elbo = elbo

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)


def _nonfinite_error(loss_value: float, traces) -> NonFiniteLossError:
    bad: dict[str, str] = {}
    for model_trace, guide_trace in traces:
        for role, tr in (("model", model_trace), ("guide", guide_trace)):
            for name, site in tr.nodes.items():
                total = site.log_prob_sum
                if total is not None and not bool(torch.isfinite(total).all()):
                    bad.setdefault(name, f"{name!r} ({role}, log_prob sum {float(total.detach())})")
    sites = list(bad)
    detail = ", ".join(bad.values()) if bad else "no single site (the sum overflowed)"
    return NonFiniteLossError(
        f"the loss is {loss_value}: the log-density is not finite at {detail}. Check that "
        f"observations lie in the support of their distribution and that parameters stay "
        f"in range (a smaller learning rate often helps).",
        sites,
    )


def _warn_missing(name: str, site: Message) -> None:
    if site.infer.get("is_auxiliary"):
        # Auxiliary guide sites (an autoguide's joint latent) have no model counterpart
        # by design, as in Pyro.
        return
    warnings.warn(
        f"Found vars in guide but not model: {{{name!r}}}. The guide's sample site "
        f"{name!r} has no counterpart in the model and is ignored by the model.",
        UserWarning,
        stacklevel=5,
    )


def _scaled_total(site: Message) -> torch.Tensor:
    """The site's scaled log-density sum, keeping the per-element terms on the site."""
    return _scaled_sum(site, site_log_prob(site))


def _site_total(site: Message) -> torch.Tensor:
    """The site's scaled log-density sum, without per-element terms where that is cheaper.

    ``Independent(base).log_prob`` sums the base's terms over the event dims and the ELBO
    then sums the rest: summing the base's terms once gives the same total with two
    fewer autograd nodes (a view and a reduction) per site.
    """
    fn = site.fn
    scale = site.scale
    if (
        site.mask is not None
        or not isinstance(fn, Independent)
        or (isinstance(scale, torch.Tensor) and scale.dim() > 0)  # per-element weights
    ):
        return _scaled_total(site)
    base = fn.base_dist
    while isinstance(base, Independent):
        base = base.base_dist
    # A distribution may offer its total in one reduction (Bernoulli: one fused BCE).
    log_prob_sum = getattr(base, "_log_prob_sum", None)
    try:
        if log_prob_sum is not None:
            total = log_prob_sum(site.value)
        else:
            total = base.log_prob(site.value).sum()
    except (ValueError, RuntimeError):
        return _scaled_total(site)  # let the general path raise its site-named error
    if not _is_one(scale):
        total = scale * total
    site.log_prob_sum = total
    return total


def _all_reparameterized(guide_nodes: dict) -> bool:
    for site in guide_nodes.values():
        if site.type == "sample" and not site.is_observed and not site.fn.has_rsample:
            if _counts(site):
                return False
    return True


def _total(terms: list) -> Any:
    """Sum scalar tensors with as few autograd nodes as possible."""
    if not terms:
        return 0.0
    if len(terms) <= 3:
        # Pairwise adds are at most two nodes here, as stack + sum would be.
        return sum(terms[1:], terms[0])
    try:
        return torch.stack(terms).sum()
    except RuntimeError:  # mixed dtypes or devices: fall back to pairwise adds
        return sum(terms[1:], terms[0])


def _sum_to(value: torch.Tensor, frames: tuple, target: tuple) -> torch.Tensor:
    """Sum ``value`` over every dim except those of vectorized plates it shares with ``target``.

    Dims are kept (size 1) so that the result broadcasts against a log-density of a site
    in the ``target`` plates.
    """
    keep = [f.dim for f in frames if f.dim is not None and f in target]
    if not keep:
        return value.sum()
    dims = [d for d in range(-value.dim(), 0) if d not in keep and value.shape[d] != 1]
    return value.sum(dims, keepdim=True) if dims else value


def _score_surrogate(
    elbo: Any,
    nonreparam: list | None,
    model_trace: Trace,
    guide_trace: Trace,
    analytic: dict[str, torch.Tensor] | None = None,
) -> Any:
    """Add score-function terms for the non-reparameterized guide sites, keeping the value.

    As in Pyro's ``Trace_ELBO``, each such site adds ``log q(z) * signal``, where the
    signal is the detached ELBO terms summed down to the site's vectorized plates (each
    vectorized particle and each item of a plate gets its own signal: terms of other
    items are independent of this draw, so leaving them out keeps the gradient unbiased
    and its variance from growing with the plate size or the number of particles).
    ``log q`` enters unscaled: the plate's ``size / subsample_size`` is already in the
    signal. The site's own ``-log q`` term is dropped from the gradient (its expectation
    is zero). ``analytic`` maps the sites whose ``log p - log q`` was replaced by
    ``-KL`` to that (scaled, per-element) ``-KL``.
    """
    if not nonreparam or not isinstance(elbo, torch.Tensor):
        return elbo
    terms = []
    for name, site in model_trace.nodes.items():
        if site.type != "sample" or not _counts(site):
            continue
        value = analytic.get(name) if analytic else None
        if value is None:
            value = site.log_prob
        if value is not None:
            terms.append((value.detach(), site.cond_indep_stack))
    for name, site in guide_trace.nodes.items():
        if site.type != "sample" or site.is_observed or not _counts(site):
            continue
        if site.log_prob is not None and not (analytic and name in analytic):
            terms.append((-site.log_prob.detach(), site.cond_indep_stack))
    extra: Any = 0.0
    for site in nonreparam:
        target = site.cond_indep_stack
        signal: Any = 0.0
        for value, frames in terms:
            signal = signal + _sum_to(value, frames, target)
        # The score is log q of the draw without the site's mask: a masked-out draw is not
        # in the ELBO itself, but it still shapes every site after it (as in Pyro, whose
        # score function is neither scaled nor masked).
        score = site.unscaled_log_prob if site.mask is None else site.fn.log_prob(site.value)
        extra = extra + (score * signal).sum()
        if not (analytic and site.name in analytic):
            extra = extra + site.log_prob_sum  # cancels the gradient of its -log q term
    return elbo + (extra - extra.detach())


class Trace_ELBO(ELBO):
    """The standard Monte Carlo ELBO (Pyro's ``Trace_ELBO``).

    With reparameterizable guide sites the gradient is the pathwise one; other guide
    sites add score-function terms to a surrogate (see :func:`_score_surrogate`).
    """

    # TraceMeanField_ELBO turns this on: latent sites with a closed-form KL use it.
    _analytic_kl = False

    def _particle(self, model_trace: Trace, guide_trace: Trace):
        terms: list = []
        guide_nodes = guide_trace.nodes
        # name -> scaled -KL per element, for the sites handled analytically.
        analytic: dict[str, torch.Tensor] = {}
        # Score-function terms need every site's per-element log-density; without them
        # only totals are needed, which skips the intermediate event-dim reductions.
        site_total = _site_total if _all_reparameterized(guide_nodes) else _scaled_total
        for name, site in model_trace.nodes.items():
            if site.type != "sample" or not _counts(site):
                continue
            if self._analytic_kl and not site.is_observed:
                neg_kl = _neg_kl_term(site, guide_nodes.get(name))
                if neg_kl is not None:
                    analytic[name] = neg_kl
                    terms.append(site.log_prob_sum)
                    continue
            terms.append(site_total(site))
        nonreparam = None
        for name, site in guide_nodes.items():
            if site.type != "sample" or site.is_observed or not _counts(site):
                continue
            if name in analytic:
                if not site.fn.has_rsample:
                    # The KL is exact for this site, but sites downstream of its draw
                    # still need a score-function term.
                    site.unscaled_log_prob = site_log_prob(site)
                    if nonreparam is None:
                        nonreparam = []
                    nonreparam.append(site)
                continue
            if name not in model_trace.nodes:
                _warn_missing(name, site)
            terms.append(-site_total(site))
            if not site.fn.has_rsample:
                if nonreparam is None:
                    nonreparam = []
                nonreparam.append(site)
        elbo = _total(terms)
        return elbo, _score_surrogate(elbo, nonreparam, model_trace, guide_trace, analytic)


_KL_REGISTERED: dict[tuple[type, type], bool] = {}


def _analytic_kl(guide_fn: Any, model_fn: Any) -> torch.Tensor | None:
    """``KL(guide_fn || model_fn)``, or None when torch has no closed form for the pair."""
    key = (type(guide_fn), type(model_fn))
    registered = _KL_REGISTERED.get(key)
    if registered is None:
        registered = _KL_REGISTERED[key] = _dispatch_kl(*key) is not NotImplemented
    if not registered:
        return None
    try:
        return kl_divergence(guide_fn, model_fn)
    except NotImplementedError:
        # A rule exists for the types but not for these instances (e.g. two transformed
        # distributions with different transforms): Monte Carlo for this site only.
        return None


def _neg_kl_term(site: Message, guide_site: Message | None) -> torch.Tensor | None:
    """``-KL(q || p)`` per element (masked, scaled) for a model site, or None if no closed form.

    Sets the site's ``log_prob_sum`` to the summed term, as the Monte Carlo path does.
    """
    if guide_site is None or guide_site.fn.batch_shape != site.fn.batch_shape:
        return None
    kl = _analytic_kl(guide_site.fn, site.fn)
    if kl is None:
        return None
    if site.mask is not None:
        kl = torch.where(torch.as_tensor(site.mask), kl, kl.new_zeros(()))
    if not _is_one(site.scale):
        kl = site.scale * kl
    neg_kl = -kl
    site.log_prob_sum = neg_kl.sum()
    return neg_kl


class TraceMeanField_ELBO(Trace_ELBO):
    """The ELBO with analytic KL terms (Pyro's ``TraceMeanField_ELBO``).

    For each latent site where the guide's and the model's distributions have a
    registered ``kl_divergence``, ``log p(z) - log q(z)`` is replaced by ``-KL(q || p)``,
    which has the same expectation and a lower variance. Other sites are Monte Carlo.
    Like Pyro's, it assumes the guide is mean-field over those sites (the KL is taken
    against the model's distribution at the sampled upstream values).
    """

    _analytic_kl = True


# Pyro's JIT-compiled variants exist to cut Python overhead per step; vitorch's ELBOs are
# lean without tracing, so code that asks for the JIT versions gets the plain ones.
JitTrace_ELBO = Trace_ELBO
JitTraceMeanField_ELBO = TraceMeanField_ELBO
