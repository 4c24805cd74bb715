"""Assertions on dicts of numpy arrays shared by the generator tests."""

from __future__ import annotations

import numpy as np


def assert_same_arrays(a: dict, b: dict) -> None:
    """Same keys, and per key the same dtype and bytes."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
