"""Validation is paid once per ELBO, without losing the errors it exists for."""

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.distributions import constraints
from vitorch.infer import SVI, NonFiniteLossError, Trace_ELBO


def bernoulli_model(data):
    p = vitorch.sample("p", dist.Beta(2.0, 2.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Bernoulli(p), obs=data)


def bernoulli_guide(data):
    a = vitorch.param("a", torch.tensor(2.0), constraint=constraints.positive)
    b = vitorch.param("b", torch.tensor(2.0), constraint=constraints.positive)
    vitorch.sample("p", dist.Beta(a, b))


def make_svi():
    return SVI(bernoulli_model, bernoulli_guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())


def test_first_step_validates_the_observation():
    with pytest.raises(ValueError, match="support"):
        make_svi().step(torch.tensor([0.0, 1.0, 2.0]))


def test_a_new_observation_is_still_validated_after_the_first_step():
    svi = make_svi()
    good = torch.tensor([0.0, 1.0, 1.0])
    for _ in range(3):
        svi.step(good)
    with pytest.raises(ValueError, match="'obs'.*invalid observation"):
        svi.step(torch.tensor([0.0, 1.0, 2.0]))
    # The failed step left no gradient behind and the good data still works.
    assert all(p.grad is None for _, p in vitorch.get_param_store().named_parameters())
    svi.step(good)


def test_later_steps_do_not_pay_for_distribution_validation(monkeypatch):
    svi = make_svi()
    data = torch.tensor([0.0, 1.0, 1.0])
    svi.step(data)
    calls = []
    original = torch.distributions.Bernoulli._validate_sample

    def counting(self, value):
        calls.append(1)
        return original(self, value)

    monkeypatch.setattr(torch.distributions.Bernoulli, "_validate_sample", counting)
    for _ in range(5):
        svi.step(data)
    assert calls == []
    # Validation is switched back on between steps: user code outside SVI still checks.
    assert vitorch.is_validation_enabled()
    with pytest.raises(ValueError):
        dist.Bernoulli(torch.tensor(0.5)).log_prob(torch.tensor(3.0))


def test_a_parameter_out_of_range_later_names_the_site():
    def model(data):
        loc = vitorch.sample("loc", dist.Normal(0.0, 1.0))
        with vitorch.plate("data", len(data)):
            vitorch.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def guide(data):
        scale = vitorch.param("scale", torch.tensor(1.0))  # unconstrained on purpose
        vitorch.sample("loc", dist.Normal(0.0, scale))

    svi = SVI(model, guide, vitorch.optim.SGD({"lr": 0.0}), Trace_ELBO())
    data = torch.zeros(3)
    svi.step(data)
    with torch.no_grad():
        vitorch.get_param_store().get_unconstrained("scale").fill_(-1.0)
    with pytest.raises(NonFiniteLossError) as info:
        svi.step(data)
    assert "loc" in info.value.sites


def test_explicitly_unvalidated_distributions_are_respected():
    def model(data):
        p = vitorch.sample("p", dist.Beta(2.0, 2.0))
        with vitorch.plate("data", len(data)):
            # Continuous "Bernoulli" targets, as image VAEs use them.
            vitorch.sample("obs", dist.Bernoulli(p, validate_args=False).to_event(0), obs=data)

    svi = SVI(model, bernoulli_guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(torch.tensor([0.2, 0.7]))
    svi.step(torch.tensor([0.3, 0.9]))  # a new tensor: still not validated, as asked


def test_one_elbo_validates_each_model_once():
    elbo = Trace_ELBO()
    data = torch.tensor([0.0, 1.0, 1.0])
    svi = SVI(bernoulli_model, bernoulli_guide, vitorch.optim.Adam({"lr": 0.01}), elbo)
    svi.step(data)
    svi.step(data)

    def bad_model(data):
        p = vitorch.sample("p", dist.Beta(2.0, 2.0))
        # A negative scale: only argument validation catches it before the loss does.
        vitorch.sample("x", dist.Normal(0.0, -1.0), obs=torch.tensor(0.0))
        with vitorch.plate("data", len(data)):
            vitorch.sample("obs", dist.Bernoulli(p), obs=data)

    other = SVI(bad_model, bernoulli_guide, vitorch.optim.Adam({"lr": 0.01}), elbo)
    with pytest.raises(ValueError, match="scale"):
        other.step(data)


@pytest.mark.parametrize(
    "bad", [[0.0, 1.0, 0.5], [0.0, -1.0, 1.0], [1.0, float("nan"), 0.0], [0.0, float("inf"), 1.0]]
)
def test_a_new_observation_is_checked_in_full_by_the_quick_path(bad):
    # 0/1 data takes a cheaper check than torch's; each kind of invalid value still fails.
    svi = make_svi()
    svi.step(torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="'obs'.*invalid observation"):
        svi.step(torch.tensor(bad))


def test_the_quick_check_never_proves_an_invalid_observation_valid():
    from vitorch.infer.elbo import _obviously_valid

    torch.manual_seed(0)
    pool = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.5, -1.0, 1e30, float("inf"), float("nan"), -0.0])
    fns = [
        dist.Bernoulli(torch.full((4,), 0.3)),
        dist.Bernoulli(torch.full((2, 2), 0.3)).to_event(1),
        dist.Poisson(torch.ones(4)),
        dist.Binomial(3, torch.full((4,), 0.5)),  # support depends on the count: not proved
    ]
    proved = 0
    for fn in fns:
        for _ in range(200):
            value = pool[torch.randint(len(pool), (4,))].reshape(fn.batch_shape + fn.event_shape)
            try:
                fn._validate_sample(value)
                valid = True
            except ValueError:
                valid = False
            if _obviously_valid(fn, value):
                proved += 1
                assert valid, (type(fn).__name__, value)
            elif valid and not isinstance(fn, dist.Binomial):
                raise AssertionError(f"valid data not proved: {type(fn).__name__} {value}")
    assert proved > 20  # the quick path is actually taken
