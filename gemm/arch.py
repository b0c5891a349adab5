"""GPU specifications and detection.

Numbers are datasheet figures for dense (no sparsity) FP8 tensor-core rates
and HBM bandwidth; they seed the cost model and the floors. Measured
ceilings belong in benchmark output, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ArchSpec:
    """One GPU model. ``device_name`` is spelled as torch reports it ("NVIDIA H100 80GB HBM3")."""

    name: str                 # short name used on the command line: "H100", "H200", ...
    device_name: str          # torch.cuda.get_device_name()
    compute_capability: tuple[int, int]
    num_sms: int
    smem_per_block_bytes: int  # opt-in maximum dynamic shared memory per block
    l2_bytes: int
    fp8_tflops: float         # dense e4m3 tensor-core peak
    hbm_tbps: float           # HBM bandwidth, TB/s

    @property
    def config_device_name(self) -> str:
        """The name engines use in config file names: spaces become underscores."""
        return normalize_device_name(self.device_name)

    @property
    def is_hopper(self) -> bool:
        return self.compute_capability == (9, 0)

    def floor_us(self, flops: float, min_bytes: float) -> float:
        """Datasheet lower bound on a kernel's time: max(compute, memory), microseconds."""
        return max(flops / (self.fp8_tflops * 1e12), min_bytes / (self.hbm_tbps * 1e12)) * 1e6


_HOPPER_SMEM = 232448  # 227 KB opt-in per block on SM90

KNOWN_ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("H100", "NVIDIA H100 80GB HBM3", (9, 0), 132, _HOPPER_SMEM, 50 * 2**20, 1979.0, 3.35),
        ArchSpec("H100-PCIe", "NVIDIA H100 PCIe", (9, 0), 114, _HOPPER_SMEM, 50 * 2**20, 1513.0, 2.0),
        ArchSpec("H100-NVL", "NVIDIA H100 NVL", (9, 0), 132, _HOPPER_SMEM, 50 * 2**20, 1671.0, 3.9),
        ArchSpec("H800", "NVIDIA H800", (9, 0), 132, _HOPPER_SMEM, 50 * 2**20, 1979.0, 3.35),
        ArchSpec("H200", "NVIDIA H200", (9, 0), 132, _HOPPER_SMEM, 60 * 2**20, 1979.0, 4.8),
        ArchSpec("H20", "NVIDIA H20", (9, 0), 78, _HOPPER_SMEM, 60 * 2**20, 296.0, 4.0),
    )
}


def normalize_device_name(device_name: str) -> str:
    """Engines' spelling of a device in config file names: ``"NVIDIA H100 80GB HBM3"`` -> ``"NVIDIA_H100_80GB_HBM3"``."""
    return device_name.strip().replace(" ", "_")


def get_arch(name: str) -> ArchSpec:
    """Look up a known GPU by short name ("H100"), torch device name or normalized device name."""
    key = name.strip()
    if key in KNOWN_ARCHS:
        return KNOWN_ARCHS[key]
    for spec in KNOWN_ARCHS.values():
        if key in (spec.device_name, spec.config_device_name) or key.upper() == spec.name.upper():
            return spec
    raise KeyError(f"unknown GPU {name!r}; known: {', '.join(KNOWN_ARCHS)}")


def detect_arch(device=None) -> ArchSpec:
    """The spec of a CUDA device (the current one by default).

    A known model gets its datasheet numbers with SM count and L2 read from the
    device; an unknown one is described from its properties with the rates of
    the closest known part of its compute capability (H100's for SM90).
    Raises RuntimeError without CUDA.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available")
    props = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
    name = props.name
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    for spec in KNOWN_ARCHS.values():
        if name == spec.device_name:
            return replace(spec, num_sms=props.multi_processor_count, l2_bytes=l2 or spec.l2_bytes)
    base = KNOWN_ARCHS["H100"]
    smem = int(getattr(props, "shared_memory_per_block_optin", 0) or base.smem_per_block_bytes)
    return ArchSpec(
        name=normalize_device_name(name), device_name=name,
        compute_capability=(props.major, props.minor), num_sms=props.multi_processor_count,
        smem_per_block_bytes=smem, l2_bytes=l2 or base.l2_bytes,
        fp8_tflops=base.fp8_tflops * props.multi_processor_count / base.num_sms, hbm_tbps=base.hbm_tbps,
    )


def interpreter_arch() -> ArchSpec:
    """A stand-in spec for running under the Triton CPU interpreter (tests, ``--interpret``)."""
    return replace(KNOWN_ARCHS["H100"], name="CPU-interpreter", device_name="CPU interpreter")
