"""Provenance tracking, ``get_model_relations``, ``get_dependencies`` and ``render_model``.

The relation and dependency dicts of small models are written out by hand; where
pyro-ppl is installed the same models, written against pyro, must give the same dicts and
the same drawn graph (nodes, edges, clusters). What provenance cannot see (a dependency
carried only by Python control flow, ``.item()``) is pinned down explicitly.
"""

from __future__ import annotations

import collections
import re
import shutil
import sys

import pytest
import torch
from torch.distributions import constraints

import vitorch
import vitorch.distributions as dist
from vitorch.infer.inspect import (
    generate_graph_specification,
    get_dependencies,
    get_model_relations,
    is_sample_site,
    render_model,
)
from vitorch.ops.provenance import (
    ProvenanceTensor,
    detach_provenance,
    extract_provenance,
    get_provenance,
    track_provenance,
)


# --------------------------------------------------------------------------------------
# Models, written against either library (``lib`` is vitorch or pyro, ``d`` its dist).
# --------------------------------------------------------------------------------------
def make_models(lib, d) -> dict:
    def chain():
        a = lib.sample("a", d.Normal(0.0, 1.0))
        b = lib.sample("b", d.Normal(a, 1.0))
        lib.sample("c", d.Normal(b, 1.0), obs=torch.tensor(0.5))

    def plate_model(data):
        mu = lib.sample("mu", d.Normal(0.0, 1.0))
        with lib.plate("N", len(data)):
            z = lib.sample("z", d.Normal(mu, 1.0))
            lib.sample("x", d.Normal(z, 1.0), obs=data)

    def params():
        loc = lib.param("loc", torch.tensor(0.0))
        scale = lib.param("scale", torch.tensor(1.0), constraint=constraints.positive)
        lib.sample("x", d.Normal(loc, scale), obs=torch.tensor(0.3))

    def mixing():
        a = lib.sample("a", d.Normal(0.0, 1.0))
        b = lib.sample("b", d.Normal(torch.zeros(2), 1.0).to_event(1))
        c = lib.sample("c", d.Normal(0.0, 1.0))
        v = torch.cat([a.unsqueeze(0), b]) * c.exp()
        # Only v[0] (from a and c) is used, but tracking is per tensor: b counts too.
        lib.sample("y", d.Normal(v[:1].sum(), 1.0), obs=torch.tensor(0.0))
        lib.sample("w", d.Normal(torch.stack([a, c]).max(0).values, 1.0))

    def control():
        a = lib.sample("a", d.Bernoulli(0.5))
        loc = 1.0 if a.item() > 0.5 else -1.0  # a reaches b only through Python
        b = lib.sample("b", d.Normal(loc, 1.0))
        lib.sample("c", d.Normal(torch.tensor(float(b)), 1.0), obs=torch.tensor(0.0))

    def collider():
        a = lib.sample("a", d.Normal(0.0, 1.0))
        b = lib.sample("b", d.LogNormal(0.0, 1.0))
        c = lib.sample("c", d.Normal(a, b))
        lib.sample("d", d.Normal(c, 1.0), obs=torch.tensor(0.0))

    def plate_sum():
        with lib.plate("p", 5):
            a = lib.sample("a", d.Normal(0.0, 1.0))
        lib.sample("b", d.Normal(a.sum(), 1.0), obs=torch.tensor(0.0))

    def nested():
        g = lib.sample("g", d.Normal(0.0, 1.0))
        with lib.plate("outer", 2, dim=-2):
            h = lib.sample("h", d.Normal(g, 1.0))
            with lib.plate("inner", 3, dim=-1):
                lib.sample("k", d.Normal(h, 1.0))
        with lib.plate("p", 4, subsample_size=2):
            e = lib.sample("e", d.Normal(0.0, 1.0))
        lib.sample("o", d.Normal(e.sum() + g, 1.0), obs=torch.tensor(0.0))

    def crossing():
        b_plate = lib.plate("B", 3, dim=-2)
        with lib.plate("A", 2, dim=-1):
            lib.sample("x", d.Normal(0.0, 1.0))
            with b_plate:
                lib.sample("y", d.Normal(0.0, 1.0))
        with b_plate:
            lib.sample("z", d.Normal(0.0, 1.0))

    def determ():
        a = lib.sample("a", d.Normal(0.0, 1.0))
        b = lib.deterministic("b", a * 2)
        lib.sample("c", d.Normal(b, 1.0), obs=torch.tensor(0.0))

    def semi(y=None):
        z = lib.sample("z", d.Normal(0.0, 1.0))
        lib.sample("y", d.Normal(z, 1.0), obs=y)

    return {
        "chain": (chain, ()),
        "plate": (plate_model, (torch.zeros(3),)),
        "params": (params, ()),
        "mixing": (mixing, ()),
        "control": (control, ()),
        "collider": (collider, ()),
        "plate_sum": (plate_sum, ()),
        "nested": (nested, ()),
        "crossing": (crossing, ()),
        "determ": (determ, ()),
        "semi": (semi, ()),
    }


MODELS = make_models(vitorch, dist)


def relations(name: str, **kwargs) -> dict:
    model, args = MODELS[name]
    return get_model_relations(model, args, **kwargs)


def deps(name: str, **kwargs) -> dict:
    model, args = MODELS[name]
    return get_dependencies(model, args, **kwargs)


def rel(sample_sample, dists, *, params=None, constraint=None, plates=None, observed=()):
    """A relations dict; ``sample_param`` defaults to no params anywhere."""
    params = params or {}
    return {
        "sample_sample": sample_sample,
        "sample_param": {k: params.get(k, []) for k in sample_sample},
        "sample_dist": dists,
        "param_constraint": constraint or {},
        "plate_sample": plates or {},
        "observed": list(observed),
    }


# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------
def test_provenance_unions_through_ops_and_keeps_values():
    x, y = torch.randn(3), torch.randn(3)
    a = ProvenanceTensor(x, frozenset({"a"}))
    b = ProvenanceTensor(y, frozenset({"b"}))
    out = (a * 2 + b.exp()).sum()
    assert get_provenance(out) == {"a", "b"}
    assert torch.equal(detach_provenance(out), (x * 2 + y.exp()).sum())
    assert type(detach_provenance(out)) is torch.Tensor
    assert get_provenance(a + detach_provenance(b) + torch.ones(3)) == {"a"}
    assert get_provenance(torch.ones(3) * 2) == frozenset()
    # Per tensor, not per element: indexing keeps every label.
    assert get_provenance(torch.stack([a, b])[0]) == {"a", "b"}
    # Detaching always returns the very tensor that was wrapped.
    assert detach_provenance(a) is x and detach_provenance(a) is detach_provenance(a)


def test_provenance_leaves_python_values_and_inplace_targets():
    a = ProvenanceTensor(torch.tensor(2.0), frozenset({"a"}))
    assert type(a.item()) is float and type(float(a)) is float and type(bool(a > 0)) is bool
    assert get_provenance(torch.tensor(a.item())) == frozenset()
    target = ProvenanceTensor(torch.zeros(()), frozenset({"t"}))
    result = target.add_(a)
    assert get_provenance(result) == {"t", "a"}
    assert get_provenance(target) == {"t"}  # the modified tensor is not relabelled
    assert float(target) == 2.0


def test_provenance_of_nested_structures():
    Pair = collections.namedtuple("Pair", ["left", "right"])
    a = ProvenanceTensor(torch.ones(2), frozenset({"a"}))
    b = ProvenanceTensor(torch.zeros(2), frozenset({"b"}))
    nest = {"x": [a, 1.0], "y": (Pair(b, "s"),), "z": "plain"}
    value, prov = extract_provenance(nest)
    assert prov == {"a", "b"}
    assert type(value["x"][0]) is torch.Tensor and value["x"][1] == 1.0
    assert isinstance(value["y"][0], Pair) and type(value["y"][0].left) is torch.Tensor
    assert value["z"] == "plain"
    plain = {"k": [torch.ones(1)], "n": 3}
    assert extract_provenance(plain)[0] is plain  # nothing to strip: same object
    tracked = track_provenance({"k": [torch.ones(1)], "n": 3}, frozenset({"c"}))
    assert get_provenance(tracked["k"][0]) == {"c"} and tracked["n"] == 3
    # torch's named-tuple results keep their type and their labels.
    result = torch.max(torch.stack([a, b]), 0)
    assert type(result) is torch.return_types.max
    assert get_provenance(result.values) == {"a", "b"} and get_provenance(result) == {"a", "b"}


def test_provenance_wrap_merges_and_empty_is_identity():
    x = torch.ones(2)
    assert ProvenanceTensor(x, frozenset()) is x
    a = ProvenanceTensor(ProvenanceTensor(x, frozenset({"a"})), frozenset({"b"}))
    assert get_provenance(a) == {"a", "b"} and detach_provenance(a) is x
    assert get_provenance(track_provenance(a, frozenset({"c"}))) == {"a", "b", "c"}
    with pytest.raises(TypeError, match="data must be a torch.Tensor, got list"):
        ProvenanceTensor([1.0], frozenset({"a"}))
    with pytest.raises(TypeError, match="provenance must be a set or frozenset, got str"):
        track_provenance(x, "a")


# --------------------------------------------------------------------------------------
# get_model_relations
# --------------------------------------------------------------------------------------
def test_relations_chain():
    assert relations("chain") == rel(
        {"a": [], "b": ["a"], "c": ["b"]},
        {"a": "Normal", "b": "Normal", "c": "Normal"},
        observed=["c"],
    )


def test_relations_plate():
    assert relations("plate") == rel(
        {"mu": [], "z": ["mu"], "x": ["z"]},
        {"mu": "Normal", "z": "Normal", "x": "Normal"},
        plates={"N": ["z", "x"]},
        observed=["x"],
    )


def test_relations_params():
    assert relations("params") == rel(
        {"x": []},
        {"x": "Normal"},
        params={"x": ["loc", "scale"]},
        constraint={"loc": "Real()", "scale": "GreaterThan(lower_bound=0.0)"},
        observed=["x"],
    )


def test_relations_torch_ops_mix_sites():
    assert relations("mixing") == rel(
        {"a": [], "b": [], "c": [], "y": ["a", "b", "c"], "w": ["a", "c"]},
        dict.fromkeys(["a", "b", "c", "y", "w"], "Normal"),
        observed=["y"],
    )


def test_relations_python_control_flow_is_not_tracked():
    # b's mean is chosen by `a.item()`, and c's by `float(b)`: neither edge is seen.
    assert relations("control") == rel(
        {"a": [], "b": [], "c": []},
        {"a": "Bernoulli", "b": "Normal", "c": "Normal"},
        observed=["c"],
    )


def test_relations_nested_and_subsampled_plates():
    # The subsample site of plate "p" is not a sample site of the model.
    assert relations("nested") == rel(
        {"g": [], "h": ["g"], "k": ["h"], "e": [], "o": ["g", "e"]},
        dict.fromkeys(["g", "h", "k", "e", "o"], "Normal"),
        plates={"outer": ["h", "k"], "inner": ["k"], "p": ["e"]},
        observed=["o"],
    )


def test_relations_crossing_plates_are_split():
    assert relations("crossing")["plate_sample"] == {
        "A": ["x", "y"],
        "B": ["y"],
        "B__CLONE": ["z"],
    }


@pytest.mark.parametrize("include", [False, True])
def test_relations_deterministic(include):
    # Without include_deterministic, b's value passes a's label straight on to c.
    upstream_of_c = ["b"] if include else ["a"]
    assert relations("determ", include_deterministic=include) == rel(
        {"a": [], "b": ["a"], "c": upstream_of_c},
        {"a": "Normal", "b": "Deterministic", "c": "Normal"},
        observed=["b", "c"],
    )


def test_relations_leave_rng_alone():
    state = torch.get_rng_state()
    relations("nested")
    assert torch.equal(torch.get_rng_state(), state)


def test_is_sample_site():
    def model():
        a = vitorch.sample("a", dist.Normal(0.0, 1.0))
        vitorch.deterministic("d", a + 1)
        vitorch.sample("pm", dist.Delta(torch.tensor(1.0)))
        with vitorch.handlers.mask(mask=False):
            vitorch.sample("m", dist.Normal(a, 1.0), obs=torch.tensor(0.0))
        with vitorch.plate("p", 4, subsample_size=2):
            pass

    tr = vitorch.handlers.trace(model).get_trace()
    found = {n: is_sample_site(s) for n, s in tr.nodes.items() if s["type"] == "sample"}
    assert found == {"a": True, "d": False, "pm": False, "m": False, "p": False}
    found = {
        n: is_sample_site(s, include_deterministic=True)
        for n, s in tr.nodes.items()
        if s["type"] == "sample"
    }
    assert found == {"a": True, "d": True, "pm": True, "m": True, "p": False}


# --------------------------------------------------------------------------------------
# get_dependencies
# --------------------------------------------------------------------------------------
E = set()  # no plate makes the dependency all-to-all


def test_dependencies_chain():
    assert deps("chain") == {
        "prior_dependencies": {"a": {"a": E}, "b": {"a": E, "b": E}, "c": {"b": E, "c": E}},
        "posterior_dependencies": {"a": {"a": E, "b": E}, "b": {"b": E, "c": E}},
    }


def test_dependencies_collider_is_moralized():
    # a and b are independent a priori, dependent given their common child c.
    assert deps("collider") == {
        "prior_dependencies": {
            "a": {"a": E},
            "b": {"b": E},
            "c": {"a": E, "b": E, "c": E},
            "d": {"c": E, "d": E},
        },
        "posterior_dependencies": {
            "a": {"a": E, "b": E, "c": E},
            "b": {"b": E, "c": E},
            "c": {"c": E, "d": E},
        },
    }


def test_dependencies_plate():
    assert deps("plate") == {
        "prior_dependencies": {
            "mu": {"mu": E},
            "z": {"mu": E, "z": E},
            "x": {"z": E, "x": E},
        },
        "posterior_dependencies": {"mu": {"mu": E, "z": E}, "z": {"z": E, "x": E}},
    }


def test_dependencies_across_a_plate():
    # b depends on all of a, so given b the elements of a depend on each other along p.
    assert deps("plate_sum") == {
        "prior_dependencies": {"a": {"a": E}, "b": {"a": E, "b": E}},
        "posterior_dependencies": {"a": {"a": {"p"}, "b": E}},
    }


def test_dependencies_mixing_and_control():
    assert deps("mixing")["posterior_dependencies"] == {
        "a": {"a": E, "b": E, "c": E, "y": E, "w": E},
        "b": {"b": E, "c": E, "y": E},
        "c": {"c": E, "y": E, "w": E},
        "w": {"w": E},
    }
    assert deps("control") == {
        "prior_dependencies": {"a": {"a": E}, "b": {"b": E}, "c": {"c": E}},
        "posterior_dependencies": {"a": {"a": E}, "b": {"b": E}},
    }


def test_dependencies_elide_deterministic():
    assert deps("determ") == {
        "prior_dependencies": {"a": {"a": E}, "c": {"a": E, "c": E}},
        "posterior_dependencies": {"a": {"a": E, "c": E}},
    }


# --------------------------------------------------------------------------------------
# render_model
# --------------------------------------------------------------------------------------
def parse_dot(source: str) -> dict:
    """The structure of a DOT text: nodes with attributes and enclosing clusters, edges,
    and each cluster's label and parent cluster."""
    nodes, edges, clusters, stack = {}, set(), {}, []
    for line in source.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"subgraph (\w+) \{", line):
            clusters[m[1]] = {"parent": stack[-1] if stack else None}
            stack.append(m[1])
        elif line == "}":
            if stack:
                stack.pop()
        elif m := re.fullmatch(r"label=(\S+) labeljust=r labelloc=b", line):
            clusters[stack[-1]]["label"] = m[1]
        elif m := re.fullmatch(r"(\w+) -> (\w+)", line):
            edges.add((m[1], m[2]))
        elif m := re.fullmatch(r"(\w+) \[(.*)\]", line):
            attrs = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', m[2]))
            node = nodes.setdefault(m[1], {"clusters": set()})
            node.update({k: v.strip('"') for k, v in attrs.items()})
            if stack:
                node["clusters"].add(stack[-1])
    return {"nodes": nodes, "edges": edges, "clusters": clusters}


def latent(name, *clusters):
    return {
        "label": name,
        "fillcolor": "white",
        "shape": "ellipse",
        "style": "filled",
        "clusters": set(clusters),
    }


def test_render_plate_model():
    graphviz = pytest.importorskip("graphviz")
    model, args = MODELS["plate"]
    graph = render_model(model, model_args=args, render_distributions=True)
    assert isinstance(graph, graphviz.Digraph)
    parsed = parse_dot(graph.source)
    mu, z, x = latent("mu"), latent("z", "cluster_N"), latent("x", "cluster_N")
    x["fillcolor"] = "gray"
    describe = {
        "label": r"mu ~ Normal\lz ~ Normal\lx ~ Normal\l",
        "shape": "plaintext",
        "clusters": set(),
    }
    assert parsed == {
        "nodes": {"mu": mu, "z": z, "x": x, "distribution_description_node": describe},
        "edges": {("mu", "z"), ("z", "x")},
        "clusters": {"cluster_N": {"parent": None, "label": "N"}},
    }


def test_render_params_and_nesting():
    pytest.importorskip("graphviz")
    model, args = MODELS["params"]
    parsed = parse_dot(render_model(model, args, render_params=True).source)
    assert parsed["edges"] == {("loc", "x"), ("scale", "x")}
    assert {n: d["shape"] for n, d in parsed["nodes"].items()} == {
        "x": "ellipse",
        "loc": "plain",
        "scale": "plain",
    }
    assert "loc" not in parse_dot(render_model(model, args).source)["nodes"]
    source = render_model(model, args, render_params=True, render_distributions=True).source
    assert r"scale : GreaterThan(lower_bound=0.0)\l" in source

    model, args = MODELS["nested"]
    parsed = parse_dot(render_model(model, args).source)
    assert parsed["clusters"] == {
        "cluster_outer": {"parent": None, "label": "outer"},
        "cluster_inner": {"parent": "cluster_outer", "label": "inner"},
        "cluster_p": {"parent": None, "label": "p"},
    }
    assert parsed["nodes"]["k"]["clusters"] == {"cluster_outer", "cluster_inner"}
    assert parsed["nodes"]["o"]["fillcolor"] == "gray"
    assert parsed["edges"] == {("g", "h"), ("h", "k"), ("g", "o"), ("e", "o")}

    model, args = MODELS["crossing"]
    clusters = parse_dot(render_model(model, args).source)["clusters"]
    assert clusters == {
        "cluster_A": {"parent": None, "label": "A"},
        "cluster_B": {"parent": "cluster_A", "label": "B"},
        "cluster_B__CLONE": {"parent": None, "label": "B"},
    }


def test_render_deterministic_and_semisupervised():
    pytest.importorskip("graphviz")
    model, args = MODELS["determ"]
    parsed = parse_dot(render_model(model, args, render_deterministic=True).source)
    assert parsed["nodes"]["b"]["style"] == "filled,dashed"
    assert parsed["edges"] == {("a", "b"), ("b", "c")}
    assert parse_dot(render_model(model, args).source)["edges"] == {("a", "b"), ("a", "c")}

    model, _ = MODELS["semi"]
    parsed = parse_dot(render_model(model, model_kwargs=[{"y": torch.tensor(1.0)}, {}]).source)
    fills = {n: d["fillcolor"] for n, d in parsed["nodes"].items()}
    assert fills == {"z": "white", "y": "gray:white"}
    parsed = parse_dot(render_model(model, model_args=[(torch.tensor(1.0),), (None,)]).source)
    assert parsed["nodes"]["y"]["fillcolor"] == "gray:white"


def test_overlapping_plates_are_not_drawable():
    crossed = rel(
        {"x": [], "y": [], "z": []},
        dict.fromkeys("xyz", "Normal"),
        plates={"A": ["x", "y"], "B": ["y", "z"]},
    )
    with pytest.raises(NotImplementedError, match="plates 'A' and 'B' overlap"):
        generate_graph_specification(crossed)


def test_render_to_file(tmp_path):
    pytest.importorskip("graphviz")
    model, args = MODELS["chain"]
    with pytest.raises(ValueError, match=r"filename must end in an output format.*model\.xyz'"):
        render_model(model, args, filename=str(tmp_path / "model.xyz"))
    target = tmp_path / "model.svg"
    if shutil.which("dot") is None:
        with pytest.raises(RuntimeError, match="needs Graphviz's `dot` program"):
            render_model(model, args, filename=str(target))
    else:
        render_model(model, args, filename=str(target))
        assert target.read_text().lstrip().startswith("<?xml")


def test_missing_graphviz_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    model, args = MODELS["chain"]
    with pytest.raises(ImportError, match="pip install graphviz"):
        render_model(model, args)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [get_model_relations, get_dependencies, render_model])
def test_bad_arguments(fn):
    name = fn.__name__
    model, _ = MODELS["chain"]
    with pytest.raises(TypeError, match=f"{name}: model must be callable, got int"):
        fn(3)
    with pytest.raises(TypeError, match=f"{name}: model_args must be a tuple .*got Tensor"):
        fn(model, torch.zeros(2))
    with pytest.raises(TypeError, match=f"{name}: model_kwargs must be a dict .*got tuple"):
        fn(model, (), ())


def test_render_list_lengths_must_match():
    model, _ = MODELS["semi"]
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        render_model(model, model_args=[(), ()], model_kwargs=[{}, {}, {}])
    with pytest.raises(ValueError, match="must not be empty"):
        render_model(model, model_args=[])
    with pytest.raises(TypeError, match="render_model: model_args must be a tuple .*got list"):
        render_model(model, model_args=[[1.0]])


# --------------------------------------------------------------------------------------
# Against Pyro
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("include", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_against_pyro(name, include):
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.infer import inspect as pyro_inspect

    pyro.clear_param_store()
    pyro_model, args = make_models(pyro, pdist)[name]
    model, _ = MODELS[name]
    assert get_model_relations(
        model, args, include_deterministic=include
    ) == pyro_inspect.get_model_relations(pyro_model, args, include_deterministic=include)
    assert get_dependencies(
        model, args, include_deterministic=include
    ) == pyro_inspect.get_dependencies(pyro_model, args, include_deterministic=include)

    pytest.importorskip("graphviz")
    kwargs = dict(render_distributions=True, render_params=True, render_deterministic=include)
    if name == "semi":
        args, kwargs["model_kwargs"] = [(), ()], [{"y": torch.tensor(1.0)}, {}]
    ours = parse_dot(render_model(model, args, **kwargs).source)
    theirs = parse_dot(pyro_inspect.render_model(pyro_model, args, **kwargs).source)
    assert ours == theirs
    pyro.clear_param_store()
