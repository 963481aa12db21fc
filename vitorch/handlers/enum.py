"""``enum``: parallel enumeration of discrete sample sites.

A latent sample site marked ``infer={"enumerate": "parallel"}`` is not drawn: its value is
the whole support of its distribution, laid out along a tensor dim to the left of every
plate dim, so every later site that depends on it broadcasts over its support without any
change to the model code. ``TraceEnum_ELBO`` then sums those dims out of the joint density.

Outside ``markov`` every enumerated site takes a fresh dim (``first_available_dim``, then
one further left each time). Inside ``markov`` a site takes the rightmost dim not held
by a variable in its Markov scope, so dims are recycled along a chain. A dim then stands
for different variables at different sites: every enumerated site gets a unique variable
id, and every sample site records in ``msg.infer["_dim_to_id"]`` which variable each
enumeration dim it can see stands for (``msg.infer["_enumerate_id"]`` is its own).

A site marked ``infer={"enumerate": "sequential"}`` is left alone (sampled as usual):
``TraceEnum_ELBO`` reruns the guide once per value of such a site instead.

A site marked with ``infer["num_samples"] = n`` takes ``n`` draws from its distribution
instead of its support, laid out the same way (for ``TraceTMC_ELBO``); such a site need
not be discrete.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime import Message, Messenger

__all__ = ["EnumMessenger", "enum"]


class EnumMessenger(Messenger):
    """Give each latent site marked for parallel enumeration its support, in a dim of its own.

    ``first_available_dim`` is the rightmost dim free for enumeration, usually
    ``-(max_plate_nesting + 1)``. The dim a site was given is recorded on it as
    ``msg.infer["_enumerate_dim"]``.
    """

    def __init__(self, fn: Callable | None = None, first_available_dim: int | None = None):
        super().__init__(fn)
        if first_available_dim is not None and (
            isinstance(first_available_dim, bool)
            or not isinstance(first_available_dim, int)
            or first_available_dim >= 0
        ):
            raise ValueError(
                f"enum: first_available_dim must be a negative int (such as "
                f"-(max_plate_nesting + 1)), got {first_available_dim!r}"
            )
        self.first_available_dim = first_available_dim
        self._reset_run()

    def _reset_run(self) -> None:
        self._next_dim = self.first_available_dim  # the next dim never to be recycled
        self._next_id = 0
        self._global_dims: dict[int, int] = {}  # dims taken outside markov -> variable id
        self._depths: dict[str, int] = {}  # site name -> its markov depth
        self._value_dims: dict[str, dict[int, int]] = {}  # site -> dims its value carries
        self._pending: dict[str, dict[int, int]] = {}  # site -> its visible dims, until post

    def __enter__(self) -> EnumMessenger:
        # Each run of the model allocates its enumeration dims afresh.
        self._reset_run()
        return super().__enter__()  # type: ignore[return-value]

    def _visible_dims(self, msg: Message) -> dict[int, int]:
        """The enumeration dims (-> variable id) the site may depend on.

        Outside ``markov`` that is the (shared, growing) map of the global dims: a dim
        taken after the site cannot appear in its tensors.
        """
        scope = msg.infer.get("_markov_scope")
        if scope is None:
            return self._global_dims
        visible = dict(self._global_dims)
        for name, count in scope.items():
            # Seen in every enclosing markov window the site was sampled under.
            if self._depths.get(name) == count:
                visible.update(self._value_dims.get(name, ()))
        self._depths[msg.name] = msg.infer["_markov_depth"]
        return visible

    def _pyro_sample(self, msg: Message) -> None:
        if msg.done or getattr(msg.fn, "_is_subsample", False):
            return
        visible = self._visible_dims(msg)
        strategy = msg.infer.get("enumerate")
        # A sequential site is left to whoever walks its values (TraceEnum_ELBO's queue);
        # on its own it is sampled, as in Pyro.
        if msg.is_observed or msg.value is not None or strategy in (None, "sequential"):
            if visible:
                self._pending[msg.name] = visible  # attached once the value is final
            return
        if strategy != "parallel":
            raise NotImplementedError(
                f"sample site {msg.name!r}: infer['enumerate']={strategy!r} is not supported; "
                f"vitorch enumerates with 'parallel' (or 'sequential', in TraceEnum_ELBO's guide)"
            )
        fn = msg.fn
        num_samples = msg.infer.get("num_samples")
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
        ):
            raise ValueError(
                f"sample site {msg.name!r}: infer['num_samples'] must be a positive int, got "
                f"{num_samples!r}"
            )
        if num_samples is None and not getattr(fn, "has_enumerate_support", False):
            raise ValueError(
                f"sample site {msg.name!r} is marked for enumeration, but its distribution "
                f"{type(fn).__name__} has no finite support to enumerate; expected a discrete "
                f"distribution such as Categorical or Bernoulli"
            )
        if self._next_dim is None:
            raise ValueError(
                f"sample site {msg.name!r} is marked for parallel enumeration, but enum was "
                f"given no first_available_dim; pass first_available_dim=-(max_plate_nesting + 1)"
            )
        var_id = self._next_id
        self._next_id += 1
        dim = self._next_dim
        if msg.infer.get("_markov_scope") is None:
            self._next_dim = dim - 1
            self._global_dims[dim] = var_id
        else:
            while dim in visible:  # recycle: the rightmost dim no variable in scope holds
                dim -= 1
        batch_shape = fn.batch_shape
        if len(batch_shape) >= -dim and batch_shape[dim] != 1:
            raise ValueError(
                f"sample site {msg.name!r}: its batch_shape {tuple(batch_shape)} has size "
                f"{batch_shape[dim]} at dim {dim}, the enumeration dim it was given; increase "
                f"max_plate_nesting to at least {len(batch_shape)}"
            )
        msg.value = self._place_support(msg, dim)
        msg.done = True
        # A new dict: the user's infer= dict may be shared between runs.
        msg.infer = {
            **msg.infer,
            "_enumerate_dim": dim,
            "_enumerate_id": var_id,
            "_dim_to_id": {**visible, dim: var_id},
        }

    @staticmethod
    def _values(msg: Message) -> torch.Tensor:
        """The site's values along a new leading dim: its support, or ``num_samples`` draws.

        Draws keep only the plate dims of the batch shape unless ``expand``: along a dim
        of an enumerated parent, draw ``i`` keeps the parent's value ``i`` (``tmc=
        "diagonal"``) or that of a parent value picked at random (``"mixture"``).
        """
        fn = msg.fn
        expand = bool(msg.infer.get("expand", False))
        num_samples = msg.infer.get("num_samples")
        if num_samples is None:
            return fn.enumerate_support(expand=expand)
        draws = (fn.rsample if fn.has_rsample else fn.sample)((num_samples,))
        if expand:
            return draws
        tmc = msg.infer.get("tmc", "diagonal")
        if tmc not in ("diagonal", "mixture"):
            raise ValueError(
                f"sample site {msg.name!r}: infer['tmc'] must be 'diagonal' or 'mixture', "
                f"got {tmc!r}"
            )
        batch_shape = fn.batch_shape
        plates = {f.dim for f in msg.cond_indep_stack if f.dim is not None}
        for d in range(-len(batch_shape), 0):
            if batch_shape[d] == 1 or d in plates:
                continue
            at = d - len(fn.event_shape)
            if tmc == "diagonal":
                pick = torch.arange(num_samples, device=draws.device) % batch_shape[d]
            else:
                pick = torch.randint(batch_shape[d], (num_samples,), device=draws.device)
            pick = pick.reshape((num_samples,) + (1,) * (draws.dim() - 1))
            draws = torch.take_along_dim(draws, pick, dim=at)
        return draws

    @classmethod
    def _place_support(cls, msg: Message, dim: int) -> torch.Tensor:
        """The site's values (support or draws), laid out along ``dim``, batch dims in place."""
        fn = msg.fn
        support = cls._values(msg)
        event_dim = len(fn.event_shape)
        batch_dims = support.dim() - 1 - event_dim
        width = max(batch_dims, -dim - 1)
        value = support.reshape(support.shape[:1] + (1,) * (width - batch_dims) + support.shape[1:])
        # The support sits at index 0; move it to `dim` (there the batch size is 1).
        at = 1 + width + dim
        if at > 0:
            value = value.transpose(0, at)
            lead = 0
            while lead < at and value.shape[lead] == 1:
                lead += 1
            value = value.reshape(value.shape[lead:])
        return value

    def _pyro_post_sample(self, msg: Message) -> None:
        dim_to_id = self._pending.pop(msg.name, None) if self._pending else None
        if dim_to_id is not None:
            msg.infer = {**msg.infer, "_dim_to_id": dim_to_id}
        else:
            dim_to_id = msg.infer.get("_dim_to_id")
        if (
            not dim_to_id
            or "_markov_scope" not in msg.infer  # only sites in a chain are looked up
            or not isinstance(msg.value, torch.Tensor)
        ):
            return
        shape = msg.value.shape[: msg.value.dim() - len(msg.fn.event_shape)]
        self._value_dims[msg.name] = {
            d: i for d, i in dim_to_id.items() if -d <= len(shape) and shape[d] > 1
        }


def enum(fn: Callable | None = None, first_available_dim: int | None = None) -> EnumMessenger:
    """Enumerate the sites of ``fn`` marked ``infer={"enumerate": "parallel"}`` in parallel."""
    return EnumMessenger(fn, first_available_dim=first_available_dim)
