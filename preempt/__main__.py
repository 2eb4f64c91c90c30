"""``python -m preempt``: the command line."""
from .cli import main

main()
