"""Run one case in this fresh process and print its measurements as JSON.

    python benchmarks/_case.py MODULE FUNCTION '{"n": 1000}'

run.py starts one of these per run, in a new session, and kills the whole
process group if it outlives its timeout.
"""

from __future__ import annotations

import importlib
import json
import sys

if __name__ == "__main__":
    module, function, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = getattr(importlib.import_module(module), function)(**kwargs)
    sys.stdout.flush()
    print("\n" + json.dumps(result), flush=True)
