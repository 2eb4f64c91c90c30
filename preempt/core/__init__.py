"""Building blocks on tensors, below the attacks: threat models (threat), 8-bit quantisation
(quantize), where an attack or the loop works for photos larger than the model input
(resolution) and change measures (metrics).

Nothing here reads files, prints, or imports an attack; the verdict (:mod:`preempt.verdict`) and
the robustification loop (:mod:`preempt.algorithms`) sit above :mod:`preempt.attacks`."""
