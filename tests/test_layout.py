import numpy as np
import pytest

from fastes.errors import ModelFileError
from fastes.layout import ParamLayout
from fastes.backends.reference import forward_logits


def test_layout_roundtrip():
    layout = ParamLayout((784, 16, 16, 10))
    assert layout.size == 784 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10 == 13002
    theta = np.arange(layout.size, dtype=np.float32)
    arrays = layout.to_arrays(theta)
    assert arrays["W0"].shape == (784, 16) and arrays["b2"].shape == (10,)
    back_layout, back = ParamLayout.from_arrays(arrays)
    assert back_layout == layout and np.array_equal(back, theta)


def test_forward_matches_formula():
    rng = np.random.default_rng(1)
    layout = ParamLayout((20, 7, 5, 3))
    theta = layout.init("normal", 0.5, rng)
    x = rng.random((6, 20)).astype(np.float32)
    a = layout.to_arrays(theta)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    expected = relu(relu(x @ a["W0"] + a["b0"]) @ a["W1"] + a["b1"]) @ a["W2"] + a["b2"]
    np.testing.assert_allclose(forward_logits(theta, layout, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["normal", "he", "glorot"])
def test_init_schemes(scheme):
    layout = ParamLayout((400, 300, 10))
    theta = layout.init(scheme, 0.1, np.random.default_rng(0))
    w = layout.to_arrays(theta)["W0"]
    expected = {"normal": 0.1, "he": np.sqrt(2 / 400), "glorot": np.sqrt(6 / 700) / np.sqrt(3)}[scheme]
    assert abs(w.std() - expected) / expected < 0.02
    assert not layout.to_arrays(theta)["b0"].any()


def test_shapes_must_chain():
    arrays = {"W0": np.zeros((4, 3), np.float32), "b0": np.zeros(3, np.float32),
              "W1": np.zeros((5, 2), np.float32), "b1": np.zeros(2, np.float32)}
    with pytest.raises(ModelFileError, match="do not chain"):
        ParamLayout.from_arrays(arrays)
    with pytest.raises(ModelFileError, match="no W0"):
        ParamLayout.from_arrays({"x": np.zeros(3)})
