"""Sweeps over several GPUs: one worker per GPU of this machine (local) or of a Ray cluster (ray_cluster),
fed (shape, backend) units by the driver's scheduler."""
