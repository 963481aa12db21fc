"""Errors that help: each names the site (or argument) and says what was expected."""

from __future__ import annotations

import warnings

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.distributions import constraints
from vitorch.infer import SVI, NonFiniteLossError, Trace_ELBO, TraceMeanField_ELBO


def _trace(fn, *args):
    return handlers.trace(fn).get_trace(*args)


# -- model structure ---------------------------------------------------------------------
def test_duplicate_site_name() -> None:
    def model() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0))
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"duplicate site name 'z'.*unique"):
        _trace(model)


def test_duplicate_between_param_and_sample() -> None:
    def model() -> None:
        vitorch.param("z", torch.tensor(0.0))
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"duplicate site name 'z'.*param"):
        _trace(model)


@pytest.mark.parametrize("under_handler", [False, True])
def test_observation_shape_does_not_broadcast(under_handler: bool) -> None:
    def model() -> None:
        vitorch.sample("x", dist.Normal(torch.zeros(3), 1.0), obs=torch.zeros(4))

    with pytest.raises(ValueError, match=r"'x'.*shape \(4,\).*\(3,\)") as info:
        _trace(model) if under_handler else model()
    assert "batch_shape" in str(info.value)


def test_observation_shape_in_a_plate() -> None:
    def model() -> None:
        with vitorch.plate("data", 3):
            vitorch.sample("x", dist.Normal(0.0, 1.0), obs=torch.zeros(5))

    with pytest.raises(ValueError, match=r"'x'.*\(5,\).*\(3,\)"):
        _trace(model)


def test_distribution_batch_shape_conflicts_with_plate() -> None:
    def model() -> None:
        with vitorch.plate("data", 3):
            vitorch.sample("x", dist.Normal(torch.zeros(4), 1.0))

    with pytest.raises(ValueError, match=r"'x'.*plate 'data'.*expected 3 or 1"):
        _trace(model)


def test_conflicting_plate_dims() -> None:
    def model() -> None:
        with vitorch.plate("a", 3, dim=-1):
            with vitorch.plate("b", 4, dim=-1):
                vitorch.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"plate 'b'.*dim=-1.*'a'"):
        _trace(model)


def test_plate_name_with_two_sizes() -> None:
    def model() -> None:
        with vitorch.plate("data", 3):
            vitorch.sample("x", dist.Normal(0.0, 1.0))
        with vitorch.plate("data", 4):
            vitorch.sample("y", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"plate 'data'.*two sizes, 3 and 4"):
        _trace(model)


def test_bad_plate_arguments() -> None:
    with pytest.raises(TypeError, match="plate name"):
        vitorch.plate(3, 4)
    with pytest.raises(ValueError, match=r"plate 'p'.*size"):
        vitorch.plate("p", -1)
    with pytest.raises(ValueError, match=r"plate 'p'.*subsample_size"):
        vitorch.plate("p", 3, subsample_size=5)
    with pytest.raises(ValueError, match=r"plate 'p'.*dim"):
        vitorch.plate("p", 3, dim=0)


def test_log_prob_shape_error_names_the_site() -> None:
    def model() -> None:
        vitorch.sample("z", dist.Normal(torch.zeros(3), 1.0))

    tr = handlers.trace(handlers.substitute(model, data={"z": torch.zeros(5)})).get_trace()
    with pytest.raises(ValueError, match=r"'z'.*shape \(5,\).*batch_shape \(3,\)"):
        tr.log_prob_sum()


# -- parameters ----------------------------------------------------------------------------
def test_param_redeclared_with_another_shape() -> None:
    vitorch.param("w", torch.zeros(3))
    with pytest.raises(ValueError, match=r"'w'.*shape \(3,\).*\(4,\)"):
        vitorch.param("w", torch.zeros(4))


def test_param_redeclared_with_another_constraint() -> None:
    vitorch.param("s", torch.ones(2), constraint=constraints.positive)
    with pytest.raises(
        ValueError, match=r"'s'.*constraint.*positive.*unit_interval|'s'.*created with"
    ):
        vitorch.param("s", torch.full((2,), 0.5), constraint=constraints.unit_interval)
    # The same constraint again (a fresh but equal object) is fine.
    vitorch.param("b", torch.tensor(0.5), constraint=constraints.interval(0.0, 1.0))
    vitorch.param("b", torch.tensor(0.5), constraint=constraints.interval(0.0, 1.0))


def test_param_bad_constraint_type() -> None:
    with pytest.raises(TypeError, match=r"'p'.*Constraint"):
        vitorch.param("p", torch.ones(1), constraint="positive")


# -- non-finite losses -----------------------------------------------------------------------
def _nan_model(data: torch.Tensor) -> None:
    z = vitorch.sample("z", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Uniform(z - 1.0, z + 1.0), obs=data)


def _nan_guide(data: torch.Tensor) -> None:
    loc = vitorch.param("loc", torch.tensor(0.0))
    vitorch.sample("z", dist.Normal(loc, 0.1))


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_non_finite_loss_names_the_sites(elbo) -> None:
    # 100 lies outside the support of Uniform(z - 1, z + 1): log p = -inf there.
    vitorch.enable_validation(False)
    data = torch.tensor([0.0, 100.0])
    with pytest.raises(NonFiniteLossError, match=r"'obs'.*model") as info:
        elbo().differentiable_loss(_nan_model, _nan_guide, data)
    assert info.value.sites == ["obs"]
    assert isinstance(info.value, ValueError)


def test_non_finite_loss_in_svi_leaves_no_gradients() -> None:
    vitorch.enable_validation(False)
    data = torch.tensor([0.0, 100.0])
    svi = SVI(_nan_model, _nan_guide, vitorch.optim.Adam({"lr": 0.1}), Trace_ELBO())
    with pytest.raises(NonFiniteLossError) as info:
        svi.step(data)
    assert info.value.sites == ["obs"]
    store = vitorch.get_param_store()
    assert store.get_unconstrained("loc").grad is None
    assert store["loc"].item() == 0.0


def test_non_finite_guide_site() -> None:
    def model() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    def guide() -> None:
        loc = vitorch.param("loc", torch.tensor(float("nan")))
        vitorch.sample("z", dist.Normal(loc, 1.0))

    vitorch.enable_validation(False)
    with pytest.raises(NonFiniteLossError) as info:
        Trace_ELBO().loss(model, guide)
    assert set(info.value.sites) == {"z"}
    assert "guide" in str(info.value) or "model" in str(info.value)


# -- guide/model mismatch ------------------------------------------------------------------
@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_guide_site_missing_from_model_warns(elbo) -> None:
    def model() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    def guide() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0))
        vitorch.sample("extra", dist.Normal(0.0, 1.0))

    with pytest.warns(UserWarning, match="'extra'"):
        elbo().loss(model, guide)


def test_replay_of_an_observed_guide_site() -> None:
    def guide() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    def model() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"'z'.*observed"):
        Trace_ELBO().loss(model, guide)


# -- argument types ----------------------------------------------------------------------------
def test_sample_name_must_be_str() -> None:
    with pytest.raises(TypeError, match="str.*int"):
        vitorch.sample(1, dist.Normal(0.0, 1.0))
    with handlers.trace(), pytest.raises(TypeError, match="str"):
        vitorch.sample(None, dist.Normal(0.0, 1.0))


def test_param_name_must_be_str() -> None:
    with pytest.raises(TypeError, match="str"):
        vitorch.param(("a",), torch.zeros(1))


@pytest.mark.parametrize("fn", [torch.zeros(2), 3.0, torch.distributions.Normal])
def test_sample_fn_must_be_a_distribution(fn) -> None:
    with pytest.raises(TypeError, match=r"'x'.*distribution"):
        vitorch.sample("x", fn)


def test_svi_refuses_torch_optimizers() -> None:
    def model() -> None:
        pass

    with pytest.raises(TypeError, match=r"optim.*vitorch.optim.Adam"):
        SVI(model, model, torch.optim.Adam, Trace_ELBO())
    p = torch.zeros(1, requires_grad=True)
    with pytest.raises(TypeError, match="optim"):
        SVI(model, model, torch.optim.Adam([p]), Trace_ELBO())
    with pytest.raises(TypeError, match="model"):
        SVI(None, model, vitorch.optim.Adam({}), Trace_ELBO())
    with pytest.raises(TypeError, match="loss"):
        SVI(model, model, vitorch.optim.Adam({}), "elbo")


def test_elbo_argument_checks() -> None:
    with pytest.raises(ValueError, match="num_particles.*0"):
        Trace_ELBO(num_particles=0)
    with pytest.raises(ValueError, match="max_plate_nesting"):
        Trace_ELBO(max_plate_nesting=-1)


def test_handlers_refuse_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        handlers.trace(3)


def test_auxiliary_guide_site_does_not_warn() -> None:
    def model() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    def guide() -> None:
        aux = vitorch.sample("aux", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
        vitorch.sample("z", dist.Delta(aux))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trace_ELBO().loss(model, guide)
        TraceMeanField_ELBO().loss(model, guide)
