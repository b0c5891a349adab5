"""``python -m gemm.cli``: the ``gemm`` command."""

import sys

from gemm.cli import main

sys.exit(main())
