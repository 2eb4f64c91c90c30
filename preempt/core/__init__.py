"""The algorithm on tensors: threat models (threat), 8-bit quantisation (quantize), where the
loop works (resolution), service transforms (upload), change measures (metrics), the check
behind "robust" (check) and the preemptive robustification loop itself (robustify).

Nothing here reads files or prints; :mod:`preempt.pipeline` does that around it.  Keep this
file free of imports: ``core.threat`` sits below :mod:`preempt.attacks`, and ``core.check`` /
``core.robustify`` above it, so re-exporting here would make an import cycle."""
