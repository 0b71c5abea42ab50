"""Tools to test your own flows.

- :func:`run_inline` runs a flow in this process on given inputs;
- :func:`assert_equivalent` checks that the process executor agrees with the serial
  reference on a flow, for given or hypothesis-generated inputs;
- :func:`check_flow` property-tests a flow on inputs drawn from its annotations
  (:func:`inputs` is that strategy), against the serial reference, plain Python
  and the declared result type;
- :func:`inject_fault` makes one worker of one stage fail, die or hang at one item,
  so error handling can be tested;
- :mod:`flowdsl.testing.strategies` (needs hypothesis: ``pip install
  flowdsl[testing]``) draws streams of items and random flows built from your stages.
"""

from .equivalence import assert_equivalent, keeps_order, run_inline
from .faults import FAULT_KINDS, InjectedFault, inject_fault
from .typed import Inputs, check_flow, inputs

__all__ = [
    "FAULT_KINDS",
    "InjectedFault",
    "Inputs",
    "assert_equivalent",
    "check_flow",
    "inject_fault",
    "inputs",
    "keeps_order",
    "run_inline",
]

InjectedFault.__module__ = __name__  # its public home, in tracebacks and pickles
