"""The search: candidates per point (space), the plan, the sweep that verifies and times them in worker
processes (runner, worker), and how many workers fit (pool_size)."""
