"""``trace``: record every site of a run in a :class:`Trace`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..runtime import Message, Messenger

__all__ = ["Trace", "TraceMessenger", "trace"]


def _is_subsample(site: Message) -> bool:
    return getattr(site.fn, "_is_subsample", False)


def _is_one(scale: Any) -> bool:
    return isinstance(scale, (int, float)) and scale == 1


def store_log_prob(site: Message, log_p: torch.Tensor) -> torch.Tensor:
    """Keep ``log_p`` on the site with its scaled form and sum; return the scaled sum.

    The per-element terms stay on the site: the score-function estimator needs them,
    and Pyro's traces carry them after an ELBO evaluation too.
    """
    scaled = log_p if _is_one(site.scale) else site.scale * log_p
    site.unscaled_log_prob = log_p
    site.log_prob = scaled
    total = scaled if scaled.dim() == 0 else scaled.sum()
    site.log_prob_sum = total
    return total


def _site_shape_error(site: Message, err: Exception) -> ValueError:
    fn = site.fn
    value = site.value
    return ValueError(
        f"sample site {site.name!r}: cannot compute log_prob of a value of shape "
        f"{tuple(getattr(value, 'shape', ()))} under {type(fn).__name__} with batch_shape "
        f"{tuple(fn.batch_shape)} and event_shape {tuple(fn.event_shape)}: {err}"
    )


def site_log_prob(site: Message) -> torch.Tensor:
    """``log p(value)`` of one sample site with its mask applied, before its scale."""
    try:
        log_p = site.fn.log_prob(site.value)
    except (ValueError, RuntimeError) as err:
        raise _site_shape_error(site, err) from err
    mask = site.mask
    if mask is not None:
        if mask is False:
            return torch.zeros_like(log_p)
        if mask is not True:
            # where, not multiply: a NaN or -inf in a masked-out entry must not leak.
            log_p = torch.where(mask, log_p, log_p.new_zeros(()))
    return log_p


class Trace:
    """The sites of one run, by name, in execution order.

    ``nodes[name]`` is the :class:`vitorch.runtime.Message` of that site; it supports
    ``site["value"]``, ``site["fn"]``, ``site["log_prob"]`` ... as in Pyro.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self._plate_sizes: dict[str, int] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def add_node(self, name: str, **kwargs: Any) -> None:
        """Add a site given as keyword fields (``type=``, ``value=``, ...)."""
        msg = Message(kwargs.pop("type", "sample"), name, kwargs.pop("fn", None))
        for k, v in kwargs.items():
            msg[k] = v
        self.nodes[name] = msg

    def copy(self) -> Trace:
        new = Trace()
        new.nodes = dict(self.nodes)
        new._plate_sizes = dict(self._plate_sizes)
        return new

    def detach_(self) -> Trace:
        for site in self.nodes.values():
            if isinstance(site.value, torch.Tensor):
                site.value = site.value.detach()
        return self

    # -- views -----------------------------------------------------------------------------
    def iter_stochastic_nodes(self) -> Iterator[tuple[str, Any]]:
        """(name, site) for latent sample sites: not observed, not plates, not deterministic."""
        for name, site in self.nodes.items():
            if site.type == "sample" and not site.is_observed and not _is_subsample(site):
                yield name, site

    @property
    def stochastic_nodes(self) -> list[str]:
        return [name for name, _ in self.iter_stochastic_nodes()]

    @property
    def observation_nodes(self) -> list[str]:
        return [
            name
            for name, site in self.nodes.items()
            if site.type == "sample"
            and site.is_observed
            and not site.infer.get("_deterministic")
            # A plate given explicit subsample indices records them as observed; they
            # are indices, not data.
            and not _is_subsample(site)
        ]

    @property
    def param_nodes(self) -> list[str]:
        return [name for name, site in self.nodes.items() if site.type == "param"]

    @property
    def nonreparam_stochastic_nodes(self) -> list[str]:
        return [n for n, s in self.iter_stochastic_nodes() if not s.fn.has_rsample]

    # -- log densities ---------------------------------------------------------------------
    def compute_log_prob(self, site_filter: Callable[[str, Any], bool] = lambda n, s: True) -> None:
        """Fill ``log_prob`` (scaled), ``unscaled_log_prob`` and ``log_prob_sum`` per site."""
        for name, site in self.nodes.items():
            if site.type != "sample" or _is_subsample(site) or not site_filter(name, site):
                continue
            if site.log_prob is not None:
                continue
            store_log_prob(site, site_log_prob(site))

    def log_prob_sum(self, site_filter: Callable[[str, Any], bool] = lambda n, s: True):
        """The sum of the (scaled) log-densities of the sample sites passing ``site_filter``."""
        total = 0.0
        for name, site in self.nodes.items():
            if site.type != "sample" or _is_subsample(site) or not site_filter(name, site):
                continue
            if site.log_prob_sum is not None:
                total = total + site.log_prob_sum
            else:
                log_p = site_log_prob(site)
                total = total + (log_p.sum() if _is_one(site.scale) else (site.scale * log_p).sum())
        return total

    def format_shapes(self, title: str = "Trace Shapes:", last_site: str | None = None) -> str:
        """A table of each site's batch and event shapes, for debugging shape errors."""
        rows = [[title, "", "", ""], ["Param Sites:", "", "", ""]]
        for name, site in self.nodes.items():
            if site.type == "param":
                rows.append([name, "", "", " ".join(str(s) for s in site.value.shape)])
            if name == last_site:
                break
        rows.append(["Sample Sites:", "", "", ""])
        for name, site in self.nodes.items():
            if site.type != "sample":  # plates' index sites are listed too, as in Pyro
                continue
            batch = " ".join(str(s) for s in site.fn.batch_shape)
            event = " ".join(str(s) for s in site.fn.event_shape)
            rows.append([name + " dist", batch, "|", event])
            if isinstance(site.value, torch.Tensor):
                shape = site.value.shape
                n_event = len(site.fn.event_shape)
                split = len(shape) - n_event
                rows.append(
                    [
                        "value",
                        " ".join(str(s) for s in shape[:split]),
                        "|",
                        " ".join(str(s) for s in shape[split:]),
                    ]
                )
            if site.log_prob is not None:
                rows.append(["log_prob", " ".join(str(s) for s in site.log_prob.shape), "|", ""])
            if name == last_site:
                break
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = []
        for r in rows:
            lines.append(
                f"{r[0].rjust(widths[0])} {r[1].rjust(widths[1])} {r[2]} {r[3].ljust(widths[3])}".rstrip()
            )
        return "\n".join(lines)


class TraceMessenger(Messenger):
    """Record the sites of a run. ``trace(model).get_trace(*args)`` returns the Trace."""

    def __init__(
        self, fn: Callable | None = None, graph_type: str | None = None, param_only: bool = False
    ):
        super().__init__(fn)
        self.param_only = param_only
        self.trace = Trace()

    def __enter__(self) -> TraceMessenger:
        self.trace = Trace()
        return super().__enter__()  # type: ignore[return-value]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            return super().__call__(*args, **kwargs)
        with self:
            self.trace.add_node("_INPUT", type="args", value=None, args=args, kwargs=kwargs)
            result = self.fn(*args, **kwargs)
            self.trace.add_node("_RETURN", type="return", value=result)
        return result

    def _reset(self) -> None:
        inputs = self.trace.nodes.get("_INPUT")
        self.trace = Trace()
        if inputs is not None:
            self.trace.nodes["_INPUT"] = inputs

    def get_trace(self, *args: Any, **kwargs: Any) -> Trace:
        self(*args, **kwargs)
        return self.trace

    def _postprocess_message(self, msg: Message) -> None:
        if self.param_only and msg.type != "param":
            return
        nodes = self.trace.nodes
        name = msg.name
        if name in nodes:
            if msg.type == "param" and nodes[name].type == "param":
                return  # reading a parameter twice is fine
            if _is_subsample(msg) and _is_subsample(nodes[name]):
                # The same plate entered again (a second ``plate("data", N)`` object);
                # Pyro raises here, vitorch keeps the first record when the sizes agree.
                if msg.fn.size == nodes[name].fn.size:
                    return
                raise ValueError(
                    f"plate {name!r} is used with two sizes, {nodes[name].fn.size} and "
                    f"{msg.fn.size}; one name means one plate"
                )
            raise ValueError(
                f"duplicate site name {name!r}: a model or guide must give every "
                f"{msg.type} site a unique name (the first was a {nodes[name].type} site)"
            )
        if msg.cond_indep_stack:
            sizes = self.trace._plate_sizes
            for frame in msg.cond_indep_stack:
                known = sizes.setdefault(frame.name, frame.full_size)
                if known != frame.full_size:
                    raise ValueError(
                        f"plate {frame.name!r} is used with two sizes, {known} and "
                        f"{frame.full_size} (at site {name!r}); one name means one plate"
                    )
        nodes[name] = msg


def trace(fn: Callable | None = None, graph_type: str | None = None, param_only: bool = False):
    """Record every site of ``fn`` (or of the ``with`` block) in a :class:`Trace`."""
    return TraceMessenger(fn, graph_type=graph_type, param_only=param_only)
