"""The engine mode of the tuner (``gemm tune --engine vllm|sglang``): config files for an engine, measured in
the engine's own kernel.

``mode``: what an engine sweep adds to an ordinary one (the floor of engine-shipped configs, the baseline
whose entry every point also times); ``compare``: our selection against the baseline's entries, slower
entries replaced by the baseline's; ``report``: that comparison per point and per M range, as CSV and
markdown.
"""
