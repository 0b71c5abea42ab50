"""The stage runtime: the flow's rules, written once for every executor.

- :mod:`.runner`: a stage's user code inside one worker (hooks, the call rules);
- :mod:`.machine`: one worker of one stage as a machine: events in, items out,
  with end of stream, zip pairing, stops and loop counting decided there;
- :mod:`.codec` and :mod:`.shm`: how batches become bytes, and big buffers
  shared memory;
- :mod:`.records`: log records made in a worker, made fit to travel.

Nothing here starts a process, opens a pipe or reads a clock: executors do that.
"""
