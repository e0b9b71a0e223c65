"""The full benchmark: ``python bench/run.py`` (the same as ``python -m lstmcpp bench --json ...``).

Writes bench/results.json beside this file unless told otherwise; see lstmcpp/bench.py.
"""

import os
import sys

from lstmcpp.__main__ import main

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:] or ["--json", os.path.join(here, "results.json")]
    sys.exit(main(["bench"] + args))
