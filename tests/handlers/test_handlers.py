"""Semantics of each effect handler, used as a function wrapper and as a context manager.

Every expected value below is computed independently of vitorch (directly from
``torch.distributions`` or by hand), so a handler that records, replays or scales the
wrong thing fails.
"""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers, poutine
from vitorch.distributions import constraints


def model_basic(data: torch.Tensor) -> torch.Tensor:
    w = vitorch.param("w", torch.tensor(0.5))
    z = vitorch.sample("z", dist.Normal(0.0, 2.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("x", dist.Normal(z * w, 1.0), obs=data)
    return z


DATA = torch.tensor([0.3, -1.2, 2.5])


def exact_log_joint(z: float, w: float, data: torch.Tensor) -> float:
    return float(
        torch.distributions.Normal(0.0, 2.0).log_prob(torch.tensor(z))
        + torch.distributions.Normal(z * w, 1.0).log_prob(data).sum()
    )


# -- vitorch.poutine is the same set of handlers ---------------------------------------
def test_poutine_is_an_alias_of_handlers() -> None:
    for name in ("trace", "replay", "condition", "substitute", "block", "seed", "scale", "mask"):
        assert getattr(poutine, name) is getattr(handlers, name)


# -- trace ---------------------------------------------------------------------------------
class TestTrace:
    def test_records_sites_in_order_with_input_and_return(self) -> None:
        tr = handlers.trace(model_basic).get_trace(DATA)
        assert list(tr.nodes) == [
            "_INPUT",
            "w",
            "z",
            "data",
            "x",
            "_RETURN",
        ]  # "data": the plate, as in Pyro
        assert tr.nodes["_INPUT"]["type"] == "args"
        assert tr.nodes["_INPUT"]["args"] == (DATA,)
        assert tr.nodes["_INPUT"]["kwargs"] == {}
        assert tr.nodes["_RETURN"]["type"] == "return"
        assert tr.nodes["_RETURN"]["value"] is tr.nodes["z"]["value"]
        assert tr.nodes["w"]["type"] == "param"
        assert tr.nodes["z"]["type"] == "sample"
        assert not tr.nodes["z"]["is_observed"]
        assert tr.nodes["x"]["is_observed"]
        assert torch.equal(tr.nodes["x"]["value"], DATA)
        assert tr.nodes["w"]["value"].item() == 0.5

    def test_node_views(self) -> None:
        tr = handlers.trace(model_basic).get_trace(DATA)
        assert tr.stochastic_nodes == ["z"]
        assert [name for name, _ in tr.iter_stochastic_nodes()] == ["z"]
        assert all(site is tr.nodes[name] for name, site in tr.iter_stochastic_nodes())
        assert tr.observation_nodes == ["x"]
        assert tr.param_nodes == ["w"]
        assert "z" in tr and "nope" not in tr

    def test_subsample_site_is_neither_latent_nor_observed(self) -> None:
        def model() -> None:
            with vitorch.plate("p", 10, subsample_size=3):
                vitorch.sample("a", dist.Normal(0.0, 1.0))
            with vitorch.plate("q", 10, subsample=torch.tensor([1, 2])):
                vitorch.sample("b", dist.Normal(0.0, 1.0), obs=torch.zeros(2))

        tr = handlers.trace(model).get_trace()
        assert tr.stochastic_nodes == ["a"]
        assert tr.observation_nodes == ["b"]

    def test_context_manager_form(self) -> None:
        with handlers.trace() as tracer:
            z = model_basic(DATA)
        tr = tracer.trace
        assert list(tr.nodes) == ["w", "z", "data", "x"]
        assert tr.nodes["z"]["value"] is z

    def test_compute_log_prob_and_log_prob_sum(self) -> None:
        def model() -> None:
            z = vitorch.sample("z", dist.Normal(0.0, 2.0))
            with vitorch.plate("data", 3):
                with handlers.scale(scale=2.5):
                    vitorch.sample("x", dist.Normal(z, 1.0), obs=DATA)

        tr = handlers.trace(model).get_trace()
        z = tr.nodes["z"]["value"]
        expected_x = torch.distributions.Normal(z, 1.0).log_prob(DATA)
        expected_z = torch.distributions.Normal(0.0, 2.0).log_prob(z)
        tr.compute_log_prob()
        x = tr.nodes["x"]
        assert torch.allclose(x["unscaled_log_prob"], expected_x)
        assert torch.allclose(x["log_prob"], 2.5 * expected_x)
        assert torch.allclose(x["log_prob_sum"], 2.5 * expected_x.sum())
        assert torch.allclose(tr.nodes["z"]["log_prob"], expected_z)
        total = expected_z + 2.5 * expected_x.sum()
        assert torch.allclose(torch.as_tensor(tr.log_prob_sum()), total)
        # A site filter keeps only the chosen sites.
        only_z = tr.log_prob_sum(lambda name, site: name == "z")
        assert torch.allclose(torch.as_tensor(only_z), expected_z)

    def test_log_prob_sum_without_compute_log_prob(self) -> None:
        tr = handlers.trace(model_basic).get_trace(DATA)
        z = tr.nodes["z"]["value"].item()
        assert math.isclose(
            float(tr.log_prob_sum().detach()), exact_log_joint(z, 0.5, DATA), rel_tol=1e-6
        )

    def test_compute_log_prob_site_filter(self) -> None:
        tr = handlers.trace(model_basic).get_trace(DATA)
        tr.compute_log_prob(lambda name, site: name == "x")
        assert tr.nodes["x"]["log_prob"] is not None
        assert "log_prob" in tr.nodes["x"]
        assert "log_prob" not in tr.nodes["z"]

    def test_format_shapes(self) -> None:
        def model() -> None:
            vitorch.param("p", torch.zeros(4, 2))
            with vitorch.plate("data", 5):
                vitorch.sample("v", dist.Normal(torch.zeros(3), 1.0).to_event(1))

        tr = handlers.trace(model).get_trace()
        tr.compute_log_prob()
        table = tr.format_shapes()
        lines = table.splitlines()
        assert lines[0].strip() == "Trace Shapes:"
        assert any(line.split() == ["p", "4", "2"] for line in lines)
        assert any(line.split() == ["v", "dist", "5", "|", "3"] for line in lines)
        assert any(line.split() == ["value", "5", "|", "3"] for line in lines)
        assert any(line.split() == ["log_prob", "5", "|"] for line in lines)

    def test_param_read_twice_is_one_node(self) -> None:
        def model() -> torch.Tensor:
            a = vitorch.param("a", torch.tensor(1.0))
            b = vitorch.param("a", torch.tensor(1.0))
            return a + b

        tr = handlers.trace(model).get_trace()
        assert tr.param_nodes == ["a"]
        assert tr.nodes["_RETURN"]["value"].item() == 2.0

    def test_each_get_trace_is_a_fresh_trace(self) -> None:
        traced = handlers.trace(model_basic)
        tr1 = traced.get_trace(DATA)
        tr2 = traced.get_trace(DATA)
        assert tr1 is not tr2
        assert not torch.equal(tr1.nodes["z"]["value"], tr2.nodes["z"]["value"])


# -- replay ----------------------------------------------------------------------------
class TestReplay:
    def test_model_sees_the_guide_values(self) -> None:
        def guide(data: torch.Tensor) -> None:
            vitorch.sample("z", dist.Normal(5.0, 0.1))

        guide_tr = handlers.trace(guide).get_trace(DATA)
        model_tr = handlers.trace(handlers.replay(model_basic, trace=guide_tr)).get_trace(DATA)
        assert model_tr.nodes["z"]["value"] is guide_tr.nodes["z"]["value"]
        # Observations are never replaced.
        assert torch.equal(model_tr.nodes["x"]["value"], DATA)
        # The model's own distribution is kept (replay sets values only).
        assert model_tr.nodes["z"]["fn"].loc.item() == 0.0

    def test_context_manager_form(self) -> None:
        guide_tr = handlers.trace(model_basic).get_trace(DATA)
        with handlers.trace() as tracer, handlers.replay(trace=guide_tr):
            model_basic(DATA)
        assert tracer.trace.nodes["z"]["value"] is guide_tr.nodes["z"]["value"]

    def test_sites_missing_from_the_trace_are_sampled(self) -> None:
        def guide() -> None:
            vitorch.sample("a", dist.Normal(0.0, 1.0))

        def model() -> None:
            vitorch.sample("a", dist.Normal(0.0, 1.0))
            vitorch.sample("b", dist.Normal(100.0, 1.0))

        guide_tr = handlers.trace(guide).get_trace()
        tr = handlers.trace(handlers.replay(model, trace=guide_tr)).get_trace()
        assert tr.nodes["a"]["value"] is guide_tr.nodes["a"]["value"]
        assert tr.nodes["b"]["value"].item() > 90.0

    def test_replay_params(self) -> None:
        replayed = handlers.replay(model_basic, params={"w": torch.tensor(3.0)})
        tr = handlers.trace(replayed).get_trace(DATA)
        assert tr.nodes["w"]["value"].item() == 3.0
        assert "w" not in vitorch.get_param_store()

    def test_replay_needs_something_to_replay(self) -> None:
        with pytest.raises(ValueError, match="trace"):
            handlers.replay(model_basic)


# -- condition -------------------------------------------------------------------------
class TestCondition:
    def test_function_wrapper(self) -> None:
        conditioned = handlers.condition(model_basic, data={"z": torch.tensor(1.5)})
        tr = handlers.trace(conditioned).get_trace(DATA)
        assert tr.nodes["z"]["is_observed"]
        assert tr.nodes["z"]["value"].item() == 1.5
        assert tr.stochastic_nodes == []
        assert tr.observation_nodes == ["z", "x"]
        assert math.isclose(
            float(tr.log_prob_sum().detach()), exact_log_joint(1.5, 0.5, DATA), rel_tol=1e-6
        )

    def test_context_manager_form(self) -> None:
        with handlers.trace() as tracer, handlers.condition(data={"z": torch.tensor(-2.0)}):
            ret = model_basic(DATA)
        assert ret.item() == -2.0
        assert tracer.trace.nodes["z"]["is_observed"]

    def test_condition_on_a_trace(self) -> None:
        source = handlers.trace(model_basic).get_trace(DATA)
        tr = handlers.trace(handlers.condition(model_basic, data=source)).get_trace(DATA)
        assert tr.nodes["z"]["value"] is source.nodes["z"]["value"]
        assert tr.nodes["z"]["is_observed"]

    def test_rejects_a_non_mapping(self) -> None:
        with pytest.raises(TypeError, match="dict"):
            handlers.condition(model_basic, data=[1, 2])


# -- substitute ------------------------------------------------------------------------
class TestSubstitute:
    def test_params_and_latents(self) -> None:
        sub = handlers.substitute(
            model_basic, data={"w": torch.tensor(2.0), "z": torch.tensor(0.7)}
        )
        tr = handlers.trace(sub).get_trace(DATA)
        assert tr.nodes["w"]["value"].item() == 2.0
        assert tr.nodes["z"]["value"].item() == pytest.approx(0.7)
        # A substituted latent stays latent (unlike condition).
        assert not tr.nodes["z"]["is_observed"]
        assert tr.stochastic_nodes == ["z"]
        # The param store is not touched by a substituted param.
        assert "w" not in vitorch.get_param_store()

    def test_substitute_fn_and_context_manager(self) -> None:
        def sub_fn(msg):
            return torch.tensor(9.0) if msg["name"] == "w" else None

        with handlers.trace() as tracer, handlers.substitute(substitute_fn=sub_fn):
            model_basic(DATA)
        assert tracer.trace.nodes["w"]["value"].item() == 9.0

    def test_observations_are_not_substituted(self) -> None:
        sub = handlers.substitute(model_basic, data={"x": torch.zeros(3)})
        tr = handlers.trace(sub).get_trace(DATA)
        assert torch.equal(tr.nodes["x"]["value"], DATA)


# -- block -----------------------------------------------------------------------------
def model_blockable() -> None:
    vitorch.param("p", torch.tensor(1.0))
    vitorch.sample("a", dist.Normal(0.0, 1.0))
    vitorch.sample("b", dist.Normal(0.0, 1.0))
    vitorch.sample("c", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))


def _seen(**kwargs) -> list[str]:
    return list(handlers.trace(handlers.block(model_blockable, **kwargs)).get_trace().nodes)


def _seen_ctx(**kwargs) -> list[str]:
    with handlers.trace() as tracer, handlers.block(**kwargs):
        model_blockable()
    return list(tracer.trace.nodes)


@pytest.mark.parametrize("seen", [_seen, _seen_ctx])
class TestBlock:
    def test_default_hides_everything(self, seen) -> None:
        assert [n for n in seen() if not n.startswith("_")] == []

    def test_hide(self, seen) -> None:
        assert [n for n in seen(hide=["a"]) if not n.startswith("_")] == ["p", "b", "c"]

    def test_expose(self, seen) -> None:
        assert [n for n in seen(expose=["a", "c"]) if not n.startswith("_")] == ["a", "c"]

    def test_hide_types(self, seen) -> None:
        assert [n for n in seen(hide_types=["param"]) if not n.startswith("_")] == ["a", "b", "c"]

    def test_expose_types(self, seen) -> None:
        assert [n for n in seen(expose_types=["param"]) if not n.startswith("_")] == ["p"]

    def test_hide_fn(self, seen) -> None:
        kept = seen(hide_fn=lambda msg: msg["type"] == "sample" and msg["is_observed"])
        assert [n for n in kept if not n.startswith("_")] == ["p", "a", "b"]

    def test_expose_fn(self, seen) -> None:
        kept = seen(expose_fn=lambda msg: msg["name"] == "b")
        assert [n for n in kept if not n.startswith("_")] == ["b"]


def test_block_still_runs_the_hidden_sites() -> None:
    # Hidden from the outer trace, but the inner trace (inside block) sees them.
    with handlers.trace() as outer, handlers.block(hide=["a"]), handlers.trace() as inner:
        model_blockable()
    assert "a" in inner.trace.nodes and "a" not in outer.trace.nodes


def test_block_rejects_a_string_list() -> None:
    with pytest.raises(TypeError, match="hide"):
        handlers.block(model_blockable, hide="a")


# -- seed ------------------------------------------------------------------------------
class TestSeed:
    def test_same_seed_same_draws(self) -> None:
        t1 = handlers.trace(handlers.seed(model_basic, rng_seed=7)).get_trace(DATA)
        t2 = handlers.trace(handlers.seed(model_basic, rng_seed=7)).get_trace(DATA)
        t3 = handlers.trace(handlers.seed(model_basic, rng_seed=8)).get_trace(DATA)
        assert torch.equal(t1.nodes["z"]["value"], t2.nodes["z"]["value"])
        assert not torch.equal(t1.nodes["z"]["value"], t3.nodes["z"]["value"])
        # The seeded draw is exactly torch's draw after manual_seed(7).
        torch.manual_seed(7)
        assert torch.equal(t1.nodes["z"]["value"], torch.distributions.Normal(0.0, 2.0).sample())

    def test_rng_state_restored_after(self) -> None:
        torch.manual_seed(123)
        expected = torch.randn(3)
        torch.manual_seed(123)
        handlers.seed(model_basic, rng_seed=5)(DATA)
        assert torch.equal(torch.randn(3), expected)

    def test_context_manager_form(self) -> None:
        with handlers.seed(rng_seed=3):
            a = torch.randn(2)
        with handlers.seed(rng_seed=3):
            b = torch.randn(2)
        assert torch.equal(a, b)

    def test_rejects_non_int(self) -> None:
        with pytest.raises(TypeError, match="rng_seed"):
            handlers.seed(model_basic, rng_seed=1.5)


# -- scale and mask --------------------------------------------------------------------
class TestScaleMask:
    def test_scale_multiplies_log_prob(self) -> None:
        scaled = handlers.scale(model_basic, scale=0.25)
        tr = handlers.trace(scaled).get_trace(DATA)
        z = tr.nodes["z"]["value"].item()
        assert math.isclose(
            float(tr.log_prob_sum().detach()), 0.25 * exact_log_joint(z, 0.5, DATA), rel_tol=1e-6
        )

    def test_nested_scales_multiply(self) -> None:
        with handlers.trace() as tracer, handlers.scale(scale=2.0), handlers.scale(scale=3.0):
            vitorch.sample("a", dist.Normal(0.0, 1.0), obs=torch.tensor(1.0))
        tracer.trace.compute_log_prob()
        expected = 6.0 * torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(1.0))
        assert torch.allclose(tracer.trace.nodes["a"]["log_prob_sum"], expected)

    def test_tensor_scale(self) -> None:
        s = torch.tensor([1.0, 2.0, 3.0])
        with handlers.trace() as tracer, handlers.scale(scale=s):
            vitorch.sample("a", dist.Normal(torch.zeros(3), 1.0), obs=DATA)
        tracer.trace.compute_log_prob()
        expected = s * torch.distributions.Normal(0.0, 1.0).log_prob(DATA)
        assert torch.allclose(tracer.trace.nodes["a"]["log_prob"], expected)

    def test_scale_rejects_nonpositive(self) -> None:
        with pytest.raises(ValueError, match="scale"):
            handlers.scale(model_basic, scale=0.0)

    def test_mask_false_zeroes(self) -> None:
        tr = handlers.trace(handlers.mask(model_basic, mask=False)).get_trace(DATA)
        assert float(tr.log_prob_sum()) == 0.0

    def test_mask_tensor_and_nesting(self) -> None:
        m1 = torch.tensor([True, True, False])
        m2 = torch.tensor([True, False, True])
        with handlers.trace() as tracer, handlers.mask(mask=m1), handlers.mask(mask=m2):
            vitorch.sample("a", dist.Normal(torch.zeros(3), 1.0), obs=DATA)
        tracer.trace.compute_log_prob()
        lp = torch.distributions.Normal(0.0, 1.0).log_prob(DATA)
        assert torch.allclose(
            tracer.trace.nodes["a"]["log_prob"], torch.stack([lp[0], 0 * lp[1], 0 * lp[2]])
        )

    def test_masked_out_nan_does_not_leak(self) -> None:
        # log_prob of -1 under an Exponential is -inf; a mask must hide it entirely.
        vitorch.enable_validation(False)
        m = torch.tensor([True, False])
        with handlers.trace() as tracer, handlers.mask(mask=m):
            vitorch.sample("a", dist.Exponential(torch.ones(2)), obs=torch.tensor([1.0, -1.0]))
        assert float(tracer.trace.log_prob_sum()) == -1.0

    def test_mask_rejects_non_bool(self) -> None:
        with pytest.raises(TypeError, match="bool"):
            handlers.mask(model_basic, mask=torch.tensor([1.0]))


# -- plate -------------------------------------------------------------------------------
class TestPlate:
    def test_auto_dims_and_broadcasting(self) -> None:
        with handlers.trace() as tracer:
            with vitorch.plate("outer", 3):
                a = vitorch.sample("a", dist.Normal(0.0, 1.0))
                with vitorch.plate("inner", 4):
                    b = vitorch.sample("b", dist.Normal(0.0, 1.0))
        assert a.shape == (3,)
        assert b.shape == (4, 3)
        frames = tracer.trace.nodes["b"]["cond_indep_stack"]
        assert [(f.name, f.dim, f.size) for f in frames] == [("outer", -1, 3), ("inner", -2, 4)]
        assert tracer.trace.nodes["b"]["fn"].batch_shape == (4, 3)

    def test_explicit_dims(self) -> None:
        with vitorch.plate("x", 2, dim=-3), vitorch.plate("y", 5, dim=-1):
            v = vitorch.sample("v", dist.Normal(0.0, 1.0))
            w = vitorch.sample("w", dist.Normal(torch.zeros(5), 1.0))
        assert v.shape == (2, 1, 5)
        assert w.shape == (2, 1, 5)

    def test_auto_dim_skips_explicit_ones(self) -> None:
        with vitorch.plate("x", 2, dim=-1), vitorch.plate("y", 3):
            v = vitorch.sample("v", dist.Normal(0.0, 1.0))
        assert v.shape == (3, 2)

    def test_plate_dims_are_released(self) -> None:
        with vitorch.plate("a", 2):
            pass
        with vitorch.plate("b", 3):
            v = vitorch.sample("v", dist.Normal(0.0, 1.0))
        assert v.shape == (3,)

    def test_full_plate_yields_arange(self) -> None:
        with vitorch.plate("data", 4) as idx:
            assert torch.equal(idx, torch.arange(4))

    def test_event_dims_are_left_alone(self) -> None:
        with vitorch.plate("data", 6):
            v = vitorch.sample("v", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        assert v.shape == (6, 2)

    def test_wrong_batch_size_in_plate(self) -> None:
        with pytest.raises(ValueError, match=r"'v'.*plate 'data'"):
            with vitorch.plate("data", 6):
                vitorch.sample("v", dist.Normal(torch.zeros(5), 1.0))

    def test_subsample_indices_and_scaling(self) -> None:
        n, m = 10, 4
        data = torch.arange(10.0)

        def model() -> torch.Tensor:
            with vitorch.plate("data", n, subsample_size=m) as idx:
                vitorch.sample("x", dist.Normal(0.0, 1.0), obs=data[idx])
            return idx

        tr = handlers.trace(model).get_trace()
        idx = tr.nodes["_RETURN"]["value"]
        assert idx.shape == (m,)
        assert len(set(idx.tolist())) == m
        assert all(0 <= i < n for i in idx.tolist())
        assert torch.equal(tr.nodes["data"]["value"], idx)
        assert tr.nodes["x"]["scale"] == n / m
        expected = n / m * torch.distributions.Normal(0.0, 1.0).log_prob(data[idx]).sum()
        assert torch.allclose(torch.as_tensor(tr.log_prob_sum()), expected)

    def test_subsample_indices_are_shared_guide_to_model_by_replay(self) -> None:
        def guide() -> None:
            with vitorch.plate("data", 100, subsample_size=5):
                vitorch.sample("z", dist.Normal(0.0, 1.0))

        seen = {}

        def model() -> None:
            with vitorch.plate("data", 100, subsample_size=5) as idx:
                seen["idx"] = idx
                vitorch.sample("z", dist.Normal(0.0, 1.0))

        guide_tr = handlers.trace(guide).get_trace()
        for _ in range(3):
            handlers.replay(model, trace=guide_tr)()
            assert torch.equal(seen["idx"], guide_tr.nodes["data"]["value"])

    def test_user_subsample(self) -> None:
        sub = torch.tensor([7, 2])
        with handlers.trace() as tracer:
            with vitorch.plate("data", 10, subsample=sub) as idx:
                vitorch.sample("x", dist.Normal(0.0, 1.0), obs=torch.zeros(2))
        assert idx is sub
        assert tracer.trace.nodes["x"]["scale"] == 5.0

    def test_scale_combines_with_plate_scale(self) -> None:
        with handlers.trace() as tracer, handlers.scale(scale=3.0):
            with vitorch.plate("data", 8, subsample_size=2):
                vitorch.sample("x", dist.Normal(0.0, 1.0))
        assert tracer.trace.nodes["x"]["scale"] == 12.0

    def test_sequential_plate(self) -> None:
        def model() -> None:
            for i in vitorch.plate("seq", 3):
                vitorch.sample(f"x_{i}", dist.Normal(float(i), 1.0))

        tr = handlers.trace(model).get_trace()
        assert tr.stochastic_nodes == ["x_0", "x_1", "x_2"]
        for i in range(3):
            site = tr.nodes[f"x_{i}"]
            assert site["value"].shape == ()
            (frame,) = site["cond_indep_stack"]
            assert (frame.name, frame.dim, frame.counter, frame.vectorized) == (
                "seq",
                None,
                i,
                False,
            )

    def test_sequential_plate_subsampled(self) -> None:
        def model() -> list[int]:
            seen = []
            for i in vitorch.plate("seq", 10, subsample_size=2):
                seen.append(i)
                vitorch.sample(f"x_{i}", dist.Normal(0.0, 1.0))
            return seen

        tr = handlers.trace(model).get_trace()
        seen = tr.nodes["_RETURN"]["value"]
        assert len(seen) == 2
        assert tr.nodes["seq"]["value"].tolist() == seen
        for i in seen:
            assert tr.nodes[f"x_{i}"]["scale"] == 5.0

    def test_sequential_inside_vectorized(self) -> None:
        with handlers.trace() as tracer:
            with vitorch.plate("vec", 4):
                for i in vitorch.plate("seq", 2):
                    vitorch.sample(f"x_{i}", dist.Normal(0.0, 1.0))
        site = tracer.trace.nodes["x_1"]
        assert site["value"].shape == (4,)
        assert [f.name for f in site["cond_indep_stack"]] == ["vec", "seq"]

    def test_param_with_event_dim_is_sliced_under_subsampling(self) -> None:
        init = torch.randn(10, 2)

        def guide() -> tuple[torch.Tensor, torch.Tensor]:
            with vitorch.plate("data", 10, subsample_size=3) as idx:
                p = vitorch.param("p", init, event_dim=1)
                q = vitorch.param("q", init.sum(-1), event_dim=0)
            return idx, p, q

        idx, p, q = guide()
        assert p.shape == (3, 2)
        assert torch.equal(p, init[idx])
        assert torch.equal(q, init.sum(-1)[idx])
        # The store keeps the whole parameter.
        assert vitorch.get_param_store()["p"].shape == (10, 2)

    def test_param_without_event_dim_is_not_sliced(self) -> None:
        with vitorch.plate("data", 10, subsample_size=3):
            p = vitorch.param("p", torch.randn(10, 2))
        assert p.shape == (10, 2)

    def test_param_slicing_under_an_active_handler(self) -> None:
        init = torch.randn(10)
        with handlers.trace() as tracer:
            with vitorch.plate("data", 10, subsample_size=4) as idx:
                p = vitorch.param("p", init, event_dim=0)
        assert torch.equal(p, init[idx])
        assert torch.equal(tracer.trace.nodes["p"]["value"], init[idx])

    def test_plate_without_handlers_has_no_side_effects(self) -> None:
        # Subsampling with no handler active still works (indices are drawn directly).
        with vitorch.plate("data", 10, subsample_size=3) as idx:
            x = vitorch.sample("x", dist.Normal(torch.zeros(3), 1.0))
        assert idx.shape == (3,) and x.shape == (3,)

    def test_constrained_param_under_plate(self) -> None:
        with vitorch.plate("data", 5, subsample_size=2) as idx:
            s = vitorch.param(
                "s", torch.arange(1.0, 6.0), constraint=constraints.positive, event_dim=0
            )
        assert torch.allclose(s, torch.arange(1.0, 6.0)[idx])
