"""Bad input gets an error that names the problem in the equations' terms."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import rnnlab
from rnnlab.layers import Recurrent

KEY = jax.random.key(0)


@pytest.fixture
def layer():
    return Recurrent(rnnlab.Elman(features=100, units=10, key=KEY))


def test_wrong_k_names_expected_and_received_shapes(layer):
    with pytest.raises(rnnlab.ShapeError) as err:
        layer(np.zeros((32, 20, 300), np.float32))
    assert str(err.value) == ("expected x of shape (T, k=100) or (B, T, k=100); got (32, 20, 300): "
                              "the layer was built for k=100 features per timestep")


def test_too_many_dimensions(layer):
    with pytest.raises(rnnlab.ShapeError, match=r"got \(2, 3, 20, 100\): 4 dimensions"):
        layer(np.zeros((2, 3, 20, 100), np.float32))


def test_empty_sequence(layer):
    with pytest.raises(rnnlab.ShapeError, match="at least one timestep"):
        layer(np.zeros((4, 0, 100), np.float32))


def test_nan_and_inf_are_located(layer):
    x = np.zeros((2, 5, 100), np.float32)
    x[1, 3, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf.*\(1, 3, 7\)"):
        layer(x)
    x[1, 3, 7] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        layer(x)


@pytest.mark.parametrize("bad, message", [
    ([5, 21], r"lengths\[1\] = 21 is outside 1..T=20"),
    ([-1, 3], r"lengths\[0\] = -1 is outside 1..T=20"),
    ([0, 3], r"lengths\[0\] = 0 is outside"),
])
def test_lengths_out_of_range(layer, bad, message):
    with pytest.raises(ValueError, match=message):
        layer(np.zeros((2, 20, 100), np.float32), np.array(bad))


def test_lengths_of_the_wrong_shape(layer):
    with pytest.raises(rnnlab.ShapeError, match=r"expected lengths of shape \(2,\), one length per sequence"):
        layer(np.zeros((2, 20, 100), np.float32), np.array([3, 4, 5]))


def test_a_0_of_the_wrong_size(layer):
    with pytest.raises(rnnlab.ShapeError, match=r"expected a_0 of shape \(10,\) or \(2, 10\); got \(5,\)"):
        layer(np.zeros((2, 20, 100), np.float32), a_0=np.zeros(5, np.float32))


def test_step_with_the_wrong_k(layer):
    with pytest.raises(rnnlab.ShapeError, match=r"expected x_t of shape \(k=100,\)"):
        layer.step(layer.initial_state(), np.zeros(50, np.float32))


def test_unknown_names_and_impossible_sizes():
    with pytest.raises(ValueError, match="unknown activation 'tanhh'"):
        rnnlab.Elman(3, 4, "tanhh", key=KEY)
    with pytest.raises(ValueError, match="unknown cell 'rnn2'"):
        rnnlab.RNN("rnn2", 3, 4, key=KEY)
    with pytest.raises(ValueError, match="units p >= 1; got k=3, p=0"):
        rnnlab.Elman(3, 0, key=KEY)
    with pytest.raises(ValueError, match="dropout"):
        rnnlab.RNN("gru", 3, 4, layers=2, dropout=1.5, key=KEY)
