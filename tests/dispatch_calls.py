"""The op's choice for CPU tensors, with the warnings it gave: shared by the dispatch tests."""

from __future__ import annotations

import warnings

from gemm import dispatch
from gemm.configs import ConfigWarning
from gemm.problem import GemmProblem


def choose_with_warnings(m: int, n: int, k: int):
    """(backend, params, messages of the ConfigWarnings) of dispatch.choose for CPU tensors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # so only dispatch's own once-only rule can hide a repeat
        backend, params = dispatch.choose(GemmProblem(m, n, k), "cpu", None)
    return backend, params, [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
