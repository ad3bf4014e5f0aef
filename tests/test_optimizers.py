"""The optimizers: each descends, returns new arrays and leaves its arguments as they were,
and resumes from a copy of its state exactly."""

import numpy as np
import pytest

from fastes.strategies.optimizers import SGD, Adam, ClipUp, Momentum

ALL = [SGD(4), Momentum(4), Adam(4), ClipUp(4)]


@pytest.mark.parametrize("opt", [SGD(3), Momentum(3, momentum=0.5), Adam(3), ClipUp(3, momentum=0.5)])
def test_optimizers_descend_a_quadratic(opt):
    theta = np.array([3.0, -2.0, 1.0], dtype=np.float32)
    state = opt.state()
    for _ in range(300):
        theta, state = opt.step(theta, theta.astype(np.float64), 0.05, state)
    assert theta.dtype == np.float32 and np.abs(theta).max() < 0.2 and int(state["t"]) == 300


@pytest.mark.parametrize("opt", ALL)
def test_a_step_leaves_its_arguments_as_they_were(opt):
    theta, state = np.ones(4, dtype=np.float32), opt.state()
    theta, state = opt.step(theta, np.arange(4.0), 0.1, state)
    before = theta.copy(), {k: np.array(v) for k, v in state.items()}
    new_theta, new_state = opt.step(theta, np.ones(4), 0.1, state)
    np.testing.assert_array_equal(theta, before[0])
    assert all(np.array_equal(state[k], before[1][k]) for k in state)
    assert not np.array_equal(new_theta, theta) and int(new_state["t"]) == 2


@pytest.mark.parametrize("opt", ALL)
def test_optimizer_resumes_from_a_copy_of_its_state(opt):
    theta_a, state_a = opt.step(np.ones(4, dtype=np.float32), np.arange(4.0), 0.1, opt.state())
    theta_b, state_b = theta_a.copy(), {k: np.array(v) for k, v in state_a.items()}
    np.testing.assert_array_equal(opt.step(theta_a, np.ones(4), 0.1, state_a)[0],
                                  opt.step(theta_b, np.ones(4), 0.1, state_b)[0])


def test_fresh_states_are_independent():
    opt = Adam(2)
    a, b = opt.state(), opt.state()
    a["m"][0] = 1.0
    assert int(b["t"]) == 0 and not b["m"].any()


def test_weight_decay_shrinks():
    opt = SGD(2, weight_decay=0.5)
    theta, _ = opt.step(np.ones(2, dtype=np.float32), np.zeros(2), 0.1, opt.state())
    np.testing.assert_allclose(theta, 0.95)


def test_clipup_steps_are_normalised_and_clipped():
    """ClipUp's step does not depend on the gradient's scale, and never exceeds max_speed."""
    opt = ClipUp(3, momentum=0.9, max_speed=0.3)
    grad = np.array([3.0, -4.0, 0.0])
    steps = {}
    for scale in (1e-3, 1e3):
        theta, state = opt.step(np.zeros(3, dtype=np.float32), scale * grad, 0.1, opt.state())
        np.testing.assert_allclose(theta, -0.1 * grad / 5, rtol=1e-6)  # lr along the unit gradient
        for _ in range(20):
            before = theta
            theta, state = opt.step(theta, scale * grad, 0.1, state)
            assert np.linalg.norm(theta - before) <= 0.3 + 1e-6
        steps[scale] = theta
    np.testing.assert_array_equal(steps[1e-3], steps[1e3])
    assert np.linalg.norm(state["v"]) == pytest.approx(0.3)  # momentum reached the speed limit


def test_clipup_default_max_speed_is_twice_the_learning_rate():
    opt = ClipUp(2, momentum=0.99)
    theta, state = np.zeros(2, dtype=np.float32), opt.state()
    for _ in range(50):
        theta, state = opt.step(theta, np.array([1.0, 0.0]), 0.05, state)
    assert np.linalg.norm(state["v"]) == pytest.approx(0.1)
    theta, state = opt.step(theta, np.zeros(2), 0.05, state)  # no direction: momentum alone, no NaN
    assert np.isfinite(theta).all()
