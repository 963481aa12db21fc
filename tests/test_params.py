"""The parameter store: mapping interface, state, save/load, atomic and safe files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import vitorch
from vitorch import _io
from vitorch.distributions import constraints
from vitorch.params import ParamStoreDict


def _fill_store() -> dict[str, torch.Tensor]:
    """Create params with a variety of constraints; return their constrained values."""
    values = {
        "loc": torch.tensor([0.5, -1.5]),
        "scale": torch.tensor([0.3, 2.0]),
        "prob": torch.tensor(0.8),
        "bounded": torch.tensor([1.5, 2.5]),
        "vec_pos": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "lower": torch.tensor(7.0),
    }
    vitorch.param("loc", values["loc"])
    vitorch.param("scale", values["scale"], constraint=constraints.positive)
    vitorch.param("prob", values["prob"], constraint=constraints.unit_interval)
    vitorch.param("bounded", values["bounded"], constraint=constraints.interval(1.0, 3.0))
    vitorch.param(
        "vec_pos",
        values["vec_pos"],
        constraint=constraints.independent(constraints.positive, 1),
    )
    vitorch.param("lower", values["lower"], constraint=constraints.greater_than(5.0))
    return values


def _same_constraint(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, constraints.independent):
        return a.reinterpreted_batch_ndims == b.reinterpreted_batch_ndims and _same_constraint(
            a.base_constraint, b.base_constraint
        )
    for attr in ("lower_bound", "upper_bound"):
        if getattr(a, attr, None) != getattr(b, attr, None):
            return False
    return True


def test_mapping_interface() -> None:
    values = _fill_store()
    store = vitorch.get_param_store()
    assert len(store) == len(values)
    assert list(store.keys()) == list(values)
    assert "scale" in store and "missing" not in store
    for name, value in store.items():
        assert torch.allclose(value, values[name]), name
    # named_parameters gives the unconstrained leaves.
    named = dict(store.named_parameters())
    assert torch.allclose(named["scale"], values["scale"].log())
    assert all(p.is_leaf and p.requires_grad for p in named.values())
    assert store.param_name(named["scale"]) == "scale"
    del store["scale"]
    assert "scale" not in store and len(store) == len(values) - 1
    assert store.param_name(named["scale"]) is None
    with pytest.raises(KeyError, match="scale"):
        store["scale"]


def test_setitem_keeps_the_constraint() -> None:
    _fill_store()
    store = vitorch.get_param_store()
    store["scale"] = torch.tensor([4.0, 5.0])
    assert torch.allclose(store["scale"], torch.tensor([4.0, 5.0]))
    assert torch.allclose(store.get_unconstrained("scale"), torch.tensor([4.0, 5.0]).log())


def test_get_state_set_state_round_trip() -> None:
    values = _fill_store()
    store = vitorch.get_param_store()
    state = store.get_state()
    leaf = store.get_unconstrained("loc")
    with torch.no_grad():
        for _, p in store.named_parameters():
            p.add_(1.0)
    store.set_state(state)
    for name, value in values.items():
        assert torch.allclose(store[name], value), name
    # The existing leaf is updated in place (optimizers hold references to it).
    assert store.get_unconstrained("loc") is leaf
    # The state is a snapshot: later updates do not change it.
    with torch.no_grad():
        leaf.add_(1.0)
    assert torch.allclose(state["params"]["loc"], values["loc"])
    # Into an empty store, the constraints come back too.
    vitorch.clear_param_store()
    store.set_state(state)
    assert torch.allclose(store["bounded"], values["bounded"])
    assert _same_constraint(store._constraints["bounded"], constraints.interval(1.0, 3.0))


def test_save_load_round_trip(tmp_path) -> None:
    values = _fill_store()
    store = vitorch.get_param_store()
    saved_constraints = dict(store._constraints)
    path = tmp_path / "params.pt"
    store.save(path)
    vitorch.clear_param_store()
    assert len(store) == 0
    store.load(path)
    assert list(store.keys()) == list(values)
    for name, value in values.items():
        assert torch.allclose(store[name], value), name
        assert _same_constraint(store._constraints[name], saved_constraints[name]), name
    # Loaded params are trainable leaves; reading them through param() uses the loaded value.
    assert store.get_unconstrained("scale").requires_grad
    assert torch.allclose(
        vitorch.param("scale", torch.ones(2), constraint=constraints.positive), values["scale"]
    )


def test_load_into_a_fresh_store_object(tmp_path) -> None:
    values = _fill_store()
    path = str(tmp_path / "params.pt")
    vitorch.get_param_store().save(path)
    other = ParamStoreDict()
    other.load(path)
    assert torch.allclose(other["prob"], values["prob"])
    assert torch.allclose(other["vec_pos"], values["vec_pos"])


def test_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    values = _fill_store()
    store = vitorch.get_param_store()
    path = tmp_path / "params.pt"
    store.save(path)
    before = path.read_bytes()

    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full (simulated)")

    with torch.no_grad():
        store.get_unconstrained("loc").add_(100.0)
    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        store.save(path)
    monkeypatch.setattr(torch, "save", real_save)

    assert path.read_bytes() == before
    # No temporary file is left behind.
    assert os.listdir(tmp_path) == ["params.pt"]
    vitorch.clear_param_store()
    store.load(path)
    assert torch.allclose(store["loc"], values["loc"])


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_load_refuses_a_file_that_runs_code(tmp_path, writer) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    payload = {"format": "vitorch.param_store/1", "params": {"x": _RunsCode(str(marker))}}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match="refused") as info:
        vitorch.get_param_store().load(path)
    assert isinstance(info.value, _io.UnsafeFileError)
    assert str(path) in str(info.value)
    assert not marker.exists()
    assert len(vitorch.get_param_store()) == 0
    # The payload is real: an unsafe loader does run it.
    if writer == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_refuses_other_files(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a vitorch param store"):
        vitorch.get_param_store().load(path)
    with pytest.raises(FileNotFoundError, match="missing"):
        vitorch.get_param_store().load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="garbage"):
        vitorch.get_param_store().load(garbage)


def test_clear_param_store() -> None:
    _fill_store()
    vitorch.clear_param_store()
    assert len(vitorch.get_param_store()) == 0
    assert list(vitorch.get_param_store().items()) == []
