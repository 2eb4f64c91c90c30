"""``python -m preempt`` (also what ``torchrun -m preempt train ...`` runs)."""
from .cli import main

main()
