"""Shared test settings."""

from __future__ import annotations

import pytest
import torch

pytest_plugins = ["tiny_runs"]  # session-wide tiny MONet/AIR runs: the `monet_run` and `air_run` fixtures


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tests' models are tiny, and on a shared 2-core machine two OpenMP threads
    stall at every barrier."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def benchmark_script():
    """Loads ``benchmarks/<name>.py`` (the scripts are not a package) and returns its ``main`` (or ``attr``)."""
    import importlib.util
    from pathlib import Path

    def load(name: str, attr: str = "main"):
        path = Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, attr)

    return load
