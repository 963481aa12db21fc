"""Model inspection: which sites depend on which, and a graphviz drawing of the model.

The model is run once under :class:`TrackProvenance`, which labels the value of every
sample and param site with the site's name (:mod:`vitorch.ops.provenance`). The labels
that reach a site's log-density are the sites it depends on *directly*: each site's value
is relabelled with its own name only, so dependencies do not chain through it.

Only dependencies that flow through torch operations are seen. A site that influences
another only through Python values (``x.item()``, ``if x > 0:``, ``int(x)``) is not seen to
influence it; see :mod:`vitorch.ops.provenance`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.distributions import Independent, constraints

from ..distributions import validation_enabled
from ..distributions.masked import MaskedDistribution
from ..handlers.trace import trace
from ..ops.provenance import ProvenanceTensor, detach_provenance, get_provenance
from ..poutine.util import site_is_subsample
from ..runtime import Message, Messenger

__all__ = [
    "TrackProvenance",
    "generate_graph_specification",
    "get_dependencies",
    "get_model_relations",
    "is_sample_site",
    "render_graph",
    "render_model",
    "site_is_deterministic",
]


def site_is_deterministic(msg: Message) -> bool:
    """True for a site recorded by :func:`vitorch.deterministic`."""
    return msg["type"] == "sample" and bool(msg["infer"].get("_deterministic", False))


def is_sample_site(msg: Message, *, include_deterministic: bool = False) -> bool:
    """True for a latent or observed sample site that is a random variable of the model.

    Plate subsample sites never are; unless ``include_deterministic``, neither are fully
    masked observations nor point-mass (``Delta``) sites, deterministic ones included.
    """
    if msg["type"] != "sample" or site_is_subsample(msg):
        return False
    if include_deterministic:
        return True
    if msg["is_observed"] and msg["mask"] is False:
        return False
    fn = msg["fn"]
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__ != "Delta"


class TrackProvenance(Messenger):
    """Label each sample and param site's value with the site's name (and only that)."""

    def __init__(self, *, include_deterministic: bool = False):
        super().__init__()
        self.include_deterministic = include_deterministic

    @staticmethod
    def _label(msg: Message) -> None:
        msg.value = ProvenanceTensor(detach_provenance(msg.value), frozenset({msg.name}))

    def _pyro_post_sample(self, msg: Message) -> None:
        include = self.include_deterministic
        if (include and site_is_deterministic(msg)) or is_sample_site(
            msg, include_deterministic=include
        ):
            self._label(msg)

    def _pyro_post_param(self, msg: Message) -> None:
        self._label(msg)


def _check_model(model: Any, model_args: Any, model_kwargs: Any, caller: str) -> tuple:
    if not callable(model):
        raise TypeError(f"{caller}: model must be callable, got {type(model).__name__}")
    if model_args is None:
        model_args = ()
    if model_kwargs is None:
        model_kwargs = {}
    if not isinstance(model_args, tuple):
        raise TypeError(
            f"{caller}: model_args must be a tuple of positional arguments, "
            f"got {type(model_args).__name__}"
        )
    if not isinstance(model_kwargs, dict):
        raise TypeError(
            f"{caller}: model_kwargs must be a dict of keyword arguments, "
            f"got {type(model_kwargs).__name__}"
        )
    return model_args, model_kwargs


def _tracked_trace(model: Callable, args: tuple, kwargs: dict, include_deterministic: bool):
    """One run of ``model`` with provenance tracked, leaving the global RNG as it was."""
    with torch.random.fork_rng(), torch.no_grad(), validation_enabled(False):
        with TrackProvenance(include_deterministic=include_deterministic):
            return trace(model).get_trace(*args, **kwargs)


def get_dependencies(
    model: Callable,
    model_args: tuple | None = None,
    model_kwargs: dict | None = None,
    include_deterministic: bool = False,
) -> dict[str, dict[str, dict[str, set[str]]]]:
    """The direct dependencies among the sample sites of ``model``, in prior and posterior.

    Returns ``{"prior_dependencies": ..., "posterior_dependencies": ...}``:

    - ``prior_dependencies[d][u]``: site ``d`` (latent or observed) depends directly on
      the latent site ``u`` in the model; every site lists itself.
    - ``posterior_dependencies[u][d]``: in the posterior, the latent site ``u`` depends
      on site ``d``: the prior edges reversed, plus the edges between co-parents of a
      common child (moralization), which conditioning on the child couples.

    Each value is the set of plates across which the dependency is all-to-all rather
    than element-wise: ``{"p"}`` means every element of ``u`` depends on every element of
    ``d`` along plate ``p``. Deterministic sites and ``Delta`` sites are left out; with
    ``include_deterministic`` a deterministic site's value is labelled with its own name,
    which (as in Pyro) hides the dependencies that pass through it.

    Example:
        >>> import vitorch, vitorch.distributions as dist
        >>> def model():
        ...     a = vitorch.sample("a", dist.Normal(0.0, 1.0))
        ...     vitorch.sample("b", dist.Normal(a, 1.0), obs=torch.tensor(0.0))
        >>> get_dependencies(model)["posterior_dependencies"]
        {'a': {'a': set(), 'b': set()}}
    """
    model_args, model_kwargs = _check_model(model, model_args, model_kwargs, "get_dependencies")
    tr = _tracked_trace(model, model_args, model_kwargs, include_deterministic)
    sites = [site for site in tr.nodes.values() if is_sample_site(site)]
    observed = {site.name for site in sites if site.is_observed}
    plates = {site.name: {f.name for f in site.cond_indep_stack if f.vectorized} for site in sites}

    prior: dict[str, dict[str, set[str]]] = {site.name: {site.name: set()} for site in sites}
    for i, site in enumerate(sites):
        upstream = [u.name for u in sites[:i] if not u.is_observed and u.value.numel()]
        if not upstream:
            continue
        provenance = get_provenance(site.fn.log_prob(site.value))
        for u in upstream:
            if u in provenance:
                prior[site.name][u] = set()

    posterior: dict[str, dict[str, set[str]]] = {
        site.name: {} for site in sites if site.name not in observed
    }
    for d, ups in prior.items():
        for u, plate_set in ups.items():
            if u not in observed:
                posterior[u][d] = set(plate_set)

    # Moralize: latent parents of a common child depend on each other in the posterior,
    # all-to-all along the plates they share with each other but not with the child.
    # Each pair is recorded once, under the parent that comes first in the model.
    position = {site.name: i for i, site in enumerate(sites)}
    for d, ups in prior.items():
        parents = [u for u in ups if u not in observed]
        for u1 in parents:
            for u2 in parents:
                if position[u1] >= position[u2]:
                    shared = posterior[u2].setdefault(u1, set())
                    shared |= (plates[u1] & plates[u2]) - plates[d]

    return {"prior_dependencies": prior, "posterior_dependencies": posterior}


def _param_constraint(msg: Message) -> constraints.Constraint:
    # param(name, init, constraint) sends (name, init, constraint); module params send
    # only the name and are unconstrained.
    if len(msg.args) > 2:
        return msg.args[2]
    return msg.kwargs.get("constraint", constraints.real)


def _dist_name(fn: Any) -> str:
    """The family of ``fn``, seen through ``Independent`` and ``MaskedDistribution``."""
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return type(fn).__name__


def _split_crossing_plates(plate_sample: dict[str, list[str]]) -> dict[str, set[str]]:
    """Make the plates' site sets nested or disjoint, as a drawing of clusters needs.

    While two plates ``p`` and ``q`` share some sites but each has sites the other lacks,
    ``q`` keeps the shared ones and a clone ``q__CLONE`` takes the rest.
    """
    groups = {name: set(names) for name, names in plate_sample.items()}
    while True:
        crossing = next(
            (
                (p, q)
                for p, ps in groups.items()
                for q, qs in groups.items()
                if ps & qs and ps - qs and qs - ps
            ),
            None,
        )
        if crossing is None:
            return groups
        p, q = crossing
        groups[q], groups[q + "__CLONE"] = groups[q] & groups[p], groups[q] - groups[p]


def get_model_relations(
    model: Callable,
    model_args: tuple | None = None,
    model_kwargs: dict | None = None,
    include_deterministic: bool = False,
) -> dict[str, Any]:
    """How the sites and plates of ``model`` relate, from one run of it.

    Returns a dict with keys:

    - ``"sample_sample"``: each sample site -> the sample sites its log-density directly
      depends on;
    - ``"sample_param"``: each sample site -> the params it directly depends on;
    - ``"sample_dist"``: each sample site -> the name of its distribution
      (``"Deterministic"`` for :func:`vitorch.deterministic` sites);
    - ``"param_constraint"``: each param -> its constraint, as a string;
    - ``"plate_sample"``: each plate -> the sample sites in it (plates whose sites cross
      are split, see :func:`render_model`);
    - ``"observed"``: the observed sample sites.

    Every list is in the order the sites ran.

    Example:
        >>> import vitorch, vitorch.distributions as dist
        >>> def model(data):
        ...     m = vitorch.sample("m", dist.Normal(0.0, 1.0))
        ...     with vitorch.plate("N", len(data)):
        ...         vitorch.sample("obs", dist.Normal(m, 1.0), obs=data)
        >>> get_model_relations(model, (torch.zeros(3),))["sample_sample"]
        {'m': [], 'obs': ['m']}
    """
    model_args, model_kwargs = _check_model(model, model_args, model_kwargs, "get_model_relations")
    tr = _tracked_trace(model, model_args, model_kwargs, include_deterministic)
    nodes = tr.nodes

    sample_sample: dict[str, list[str]] = {}
    sample_param: dict[str, list[str]] = {}
    sample_dist: dict[str, str] = {}
    param_constraint: dict[str, str] = {}
    plate_sample: dict[str, list[str]] = {}
    observed: list[str] = []
    for name, site in nodes.items():
        if site.type == "param":
            param_constraint[name] = str(_param_constraint(site))
            continue
        if site.type != "sample" or site_is_subsample(site):
            continue
        deterministic = site_is_deterministic(site)
        fn = site.fn.base_dist if deterministic else site.fn
        upstream = get_provenance(fn.log_prob(site.value)) - {name}
        sample_sample[name] = [u for u in upstream if u in nodes and nodes[u].type == "sample"]
        sample_param[name] = [u for u in upstream if u in nodes and nodes[u].type == "param"]
        sample_dist[name] = "Deterministic" if deterministic else _dist_name(site.fn)
        for frame in site.cond_indep_stack:
            plate_sample.setdefault(frame.name, []).append(name)
        if site.is_observed:
            observed.append(name)

    order = {name: i for i, name in enumerate(nodes)}

    def in_run_order(names: Iterable[str]) -> list[str]:
        return sorted(names, key=order.__getitem__)

    return {
        "sample_sample": {k: in_run_order(v) for k, v in sample_sample.items()},
        "sample_param": {k: in_run_order(v) for k, v in sample_param.items()},
        "sample_dist": sample_dist,
        "param_constraint": param_constraint,
        "plate_sample": {
            k: in_run_order(v) for k, v in _split_crossing_plates(plate_sample).items()
        },
        "observed": observed,
    }


def _plate_parents(plate_groups: dict[Any, list[str]]) -> dict[str, dict[str, str | None]]:
    """Each plate's enclosing plate: the smallest other plate holding all its sites.

    Of two plates with the same sites, the one listed first encloses the other.
    """
    plates = [p for p in plate_groups if p is not None]
    members = {p: set(plate_groups[p]) for p in plates}
    parents: dict[str, dict[str, str | None]] = {}
    for i, plate in enumerate(plates):
        mine = members[plate]
        candidates = []
        for j, other in enumerate(plates):
            theirs = members[other]
            if other == plate:
                continue
            if mine < theirs or (mine == theirs and j < i):
                candidates.append((len(theirs), -j, other))
            elif mine & theirs and not mine >= theirs:
                raise NotImplementedError(
                    f"render_model: plates {plate!r} and {other!r} overlap without one "
                    f"enclosing the other, which cannot be drawn as nested clusters"
                )
        parents[plate] = {"parent": min(candidates)[2] if candidates else None}
    return parents


def generate_graph_specification(
    model_relations: dict[str, Any], render_params: bool = False
) -> dict[str, Any]:
    """Turn :func:`get_model_relations` output into what :func:`render_graph` draws.

    Returns a dict with ``"plate_groups"`` (plate -> the nodes drawn directly or
    indirectly inside it; ``None`` -> the nodes in no plate), ``"plate_data"`` (plate ->
    ``{"parent": enclosing plate or None}``), ``"node_data"`` (node -> ``is_observed``,
    ``distribution`` and, for params, ``constraint``) and ``"edge_list"`` ((source,
    target) pairs). With ``render_params`` the params sample sites depend on are nodes too.
    """
    sample_sample = model_relations["sample_sample"]
    plate_groups: dict[Any, list[str]] = dict(model_relations["plate_sample"])
    in_plates = {name for names in plate_groups.values() for name in names}
    plate_groups[None] = [name for name in sample_sample if name not in in_plates]

    node_data: dict[str, dict[str, Any]] = {
        name: {
            "is_observed": name in model_relations["observed"],
            "distribution": model_relations["sample_dist"][name],
        }
        for name in sample_sample
    }
    edge_list = [(u, d) for d, ups in sample_sample.items() for u in ups]

    if render_params:
        used = {p for params in model_relations["sample_param"].values() for p in params}
        for param, constraint in model_relations["param_constraint"].items():
            node_data[param] = {
                "is_observed": False,
                "constraint": constraint,
                "distribution": None,
            }
            if param in used:
                plate_groups[None].append(param)
        edge_list += [(p, d) for d, ps in model_relations["sample_param"].items() for p in ps]

    return {
        "plate_groups": plate_groups,
        "plate_data": _plate_parents(plate_groups),
        "node_data": node_data,
        "edge_list": edge_list,
    }


def _import_graphviz():
    try:
        import graphviz
    except ImportError as err:
        raise ImportError(
            "render_model needs the graphviz Python package (https://graphviz.org/): "
            "install it with `pip install graphviz`"
        ) from err
    return graphviz


def render_graph(graph_specification: dict[str, Any], render_distributions: bool = False):
    """A ``graphviz.Digraph`` of a :func:`generate_graph_specification` result.

    Sample sites are ellipses (observed ones filled gray, deterministic ones dashed),
    params are plain labels, plates are clusters labelled with the plate's name. With
    ``render_distributions`` a text node lists each site's distribution and each param's
    constraint.
    """
    graphviz = _import_graphviz()
    plate_groups = graph_specification["plate_groups"]
    node_data = graph_specification["node_data"]
    parents = {p: d["parent"] for p, d in graph_specification["plate_data"].items()}

    graph = graphviz.Digraph()
    clusters = {None: graph}
    for plate in plate_groups:
        if plate is not None:
            clusters[plate] = graphviz.Digraph(name=f"cluster_{plate}")
            clusters[plate].attr(label=plate.split("__CLONE")[0], labeljust="r", labelloc="b")

    # Observed in every run: gray; in none: white; in some (semi-supervised): both.
    fill = {True: "gray", False: "white", None: "gray:white"}
    for plate, names in plate_groups.items():
        for name in names:
            data = node_data[name]
            distribution = data["distribution"]
            clusters[plate].node(
                name,
                label=name if distribution else name.replace("$params", ""),
                shape="ellipse" if distribution else "plain",
                style="filled,dashed" if distribution == "Deterministic" else "filled",
                fillcolor=fill[data["is_observed"]],
            )

    # graphviz copies a subgraph's body when it is added, so inner clusters go in first.
    def nest(plate: Any) -> None:
        for child, parent in parents.items():
            if parent == plate:
                nest(child)
                clusters[plate].subgraph(clusters[child])

    nest(None)

    for source, target in graph_specification["edge_list"]:
        graph.edge(source, target)

    if render_distributions:
        lines = []
        for name, data in node_data.items():
            if data["distribution"]:
                lines.append(f"{name} ~ {data['distribution']}\\l")
            if data.get("constraint"):
                lines.append(f"{name} : {data['constraint']}\\l")
        graph.node("distribution_description_node", label="".join(lines), shape="plaintext")
    return graph


def _merge(things: list) -> Any:
    """Combine the specifications of several runs: union of dicts and lists; a flag true
    in every run is True, false in every run False, otherwise None (mixed)."""
    first = things[0]
    if len(things) == 1:
        return first
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for thing in things for k in thing))
        return {k: _merge([thing[k] for thing in things if k in thing]) for k in keys}
    if isinstance(first, list):
        return list(dict.fromkeys(x for thing in things for x in thing))
    if isinstance(first, bool):
        return first if all(x is first for x in things) else None
    return first


def render_model(
    model: Callable,
    model_args: tuple | list[tuple] | None = None,
    model_kwargs: dict | list[dict] | None = None,
    filename: str | os.PathLike | None = None,
    render_distributions: bool = False,
    render_params: bool = False,
    render_deterministic: bool = False,
):
    """Draw ``model`` as a graphviz graph: sites as nodes, dependencies as edges, plates as
    clusters.

    Args:
        model: the model to draw.
        model_args: its positional arguments; a list of tuples draws the union of several
            runs (e.g. a semi-supervised model run with and without labels).
        model_kwargs: its keyword arguments, or a list of dicts as for ``model_args``.
        filename: also write the drawing there, in the format its suffix names
            (``"model.pdf"``, ``"model.svg"``, ...); this needs Graphviz's ``dot`` program.
        render_distributions: list each site's distribution (and param constraints).
        render_params: draw the params sample sites depend on.
        render_deterministic: draw :func:`vitorch.deterministic` sites (dashed).

    Returns:
        A ``graphviz.Digraph``; ``.source`` is its DOT text, and notebooks display it.
    """
    lists = [x for x in (model_args, model_kwargs) if isinstance(x, list)]
    if any(not x for x in lists):
        raise ValueError("render_model: model_args / model_kwargs lists must not be empty")
    runs = len(lists[0]) if lists else 1
    args_list = model_args if isinstance(model_args, list) else [model_args] * runs
    kwargs_list = model_kwargs if isinstance(model_kwargs, list) else [model_kwargs] * runs
    if len(args_list) != len(kwargs_list):
        raise ValueError(
            f"render_model: model_args and model_kwargs lists must have the same length, "
            f"got {len(args_list)} and {len(kwargs_list)}"
        )
    for args, kwargs in zip(args_list, kwargs_list):
        _check_model(model, args, kwargs, "render_model")
    graphviz = _import_graphviz()
    relations = [
        get_model_relations(model, args, kwargs, include_deterministic=render_deterministic)
        for args, kwargs in zip(args_list, kwargs_list)
    ]
    spec = _merge([generate_graph_specification(r, render_params=render_params) for r in relations])
    # The merged plates may cross where the runs' plates did not: recompute the nesting.
    spec["plate_data"] = _plate_parents(spec["plate_groups"])
    graph = render_graph(spec, render_distributions=render_distributions)

    if filename is not None:
        stem, suffix = os.path.splitext(os.fspath(filename))
        fmt = suffix[1:].lower()
        if fmt not in graphviz.FORMATS:
            raise ValueError(
                f"render_model: filename must end in an output format graphviz knows "
                f"(.pdf, .png, .svg, ...), got {os.fspath(filename)!r}"
            )
        try:
            graph.render(stem, format=fmt, view=False, cleanup=True)
        except graphviz.ExecutableNotFound as err:
            raise RuntimeError(
                "render_model: writing a file needs Graphviz's `dot` program on the PATH "
                "(e.g. `apt-get install graphviz` or `conda install graphviz`); without it, "
                "use the returned graph's .source"
            ) from err
    return graph
