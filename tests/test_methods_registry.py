"""The method registry: registration rules, config resolution, clear errors, entry-point errors kept."""

from __future__ import annotations

import pytest
import torch

from wsl_bench import methods as M


class _Const(M.Method):
    """A constant method for registry tests."""

    presets = {"quick": {"k": 2}, "paper": {"k": 3}}

    def predict(self, images):
        return torch.full((images.shape[0], 14), float(self.config["k"]))

    def explain(self, images, classes):
        return torch.zeros(images.shape[0], len(classes), 4, 4)


@pytest.fixture
def registered():
    M.register_method("test-const", k=1, description="constant")(_Const)
    yield "test-const"
    M._REGISTRY.pop("test-const", None)


def test_defaults_then_preset_then_user_config(registered):
    assert M.resolve_config(registered) == {"k": 1}
    assert M.resolve_config(registered, "quick") == {"k": 2}
    assert M.resolve_config(registered, "paper", {"k": 9, "x": 1}) == {"k": 9, "x": 1}
    m = M.create_method(registered, preset="quick")
    assert m.name == registered and m.predict(torch.zeros(2, 1, 8, 8))[0, 0] == 2.0
    assert M.get_method_info(registered).description == "constant"


def test_registration_errors(registered):
    class Other(_Const):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        M.register_method(registered)(Other)
    with pytest.raises(TypeError, match="Method subclass"):
        M.register_method("not-a-method")(object)


def test_unknown_method_names_the_registered_ones(registered):
    with pytest.raises(KeyError, match="test-const"):
        M.get_method_info("no-such-method")


def test_unregister_frees_the_name_for_another_class(registered):
    class Other(_Const):
        """Another constant method."""

    M.unregister_method(registered)
    assert registered not in M.available_methods()
    with pytest.raises(KeyError, match="unknown method 'test-const'"):
        M.get_method_info(registered)
    M.register_method(registered, k=5)(Other)  # no longer "registered twice"
    assert M.get_method_info(registered).cls is Other and M.resolve_config(registered) == {"k": 5}


def test_unregister_of_an_unknown_name_is_a_key_error_naming_it():
    with pytest.raises(KeyError, match="cannot unregister method 'no-such-method'.*prior-center"):
        M.unregister_method("no-such-method")
    assert "prior-center" in M.available_methods()  # the failed call removed nothing


def test_broken_entry_point_is_reported_not_raised(monkeypatch):
    class EP:
        name, value = "broken", "nowhere_module"

        def load(self):
            raise ImportError("No module named 'nowhere_module'")

    monkeypatch.setattr(M.metadata, "entry_points", lambda group: [EP()])
    errors = M.load_entry_points(force=True)
    assert errors and "broken" in errors[0] and "nowhere_module" in errors[0]
    assert M.load_entry_points() == errors  # kept for `wsl-bench methods` to show
    monkeypatch.undo()
    M.load_entry_points(force=True)


def test_references_are_registered():
    names = M.available_methods()
    for ref in ("prior-center", "prior-lung", "random"):
        assert ref in names and not names[ref].cls.trainable and names[ref].paper
