"""The algorithms on tensors, above the verdict layer: the preemptive robustification loop
(:mod:`.robustify`) and its persistent targeted attackers (:mod:`.persistent`).  Nothing here
reads files or prints; :mod:`preempt.pipeline` does that around it."""
