"""Photos on disk: reading and writing them (photos), planning outputs, batching, and the
file-level robustify and verify jobs with their reports, on top of :mod:`preempt.core`."""
