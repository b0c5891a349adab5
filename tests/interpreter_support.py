"""Whether Triton kernels can run on CPU tensors through the Triton interpreter here."""

import numpy
import pytest
import triton


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2])


# triton <= 3.6's interpreter fails with numpy >= 2.3 ("only 0-dimensional arrays can be converted
# to Python scalars"); triton 3.7+ works with it.
INTERPRETER_WORKS = not (_version(triton.__version__) < (3, 7) and _version(numpy.__version__) >= (2, 3))

requires_interpreter = pytest.mark.skipif(
    not INTERPRETER_WORKS,
    reason=f"the Triton {triton.__version__} interpreter cannot run with numpy {numpy.__version__}")
