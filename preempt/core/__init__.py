"""The algorithm on tensors: threat models, 8-bit quantisation, where the loop works
(resolution), service transforms (upload) and the preemptive robustification loop itself.

Nothing here reads files or prints; :mod:`preempt.pipeline` does that around it."""
