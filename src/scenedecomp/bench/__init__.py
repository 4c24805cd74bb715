"""Benchmarks: training throughput vs the machine's matmul peak, FLOPs/time/memory vs K."""

from __future__ import annotations


