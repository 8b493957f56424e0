"""gridserve.tuning: glibc's allocator thresholds, left alone when the operator set them."""

from __future__ import annotations

import ctypes
import platform

import pytest

from gridserve.tuning import operator_tuned, tune_malloc


def test_an_operator_setting_is_kept() -> None:
    assert operator_tuned({"MALLOC_ARENA_MAX": "2"})
    assert operator_tuned({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert not operator_tuned({"PATH": "/usr/bin", "GRIDSERVE_MALLOC": "x"})
    assert tune_malloc({"MALLOC_TRIM_THRESHOLD_": "0"}) is False


def test_glibc_takes_the_thresholds() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert tune_malloc({}) is True
    assert hasattr(ctypes.CDLL(None), "mallopt")
