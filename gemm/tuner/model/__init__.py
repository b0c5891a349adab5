"""The analytical cost model (roofline), its fitted coefficients (fitted, coefficients.json), fitting them
to results logs (fit), and configs predicted for GPUs not at hand (predict)."""
