"""The tuner: what to sweep (settings, presets), where (target), the search, its results, the cost model,
sweeps over several GPUs, and what a sweep leaves behind (outputs)."""
