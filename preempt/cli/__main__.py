"""``python -m preempt.cli``: the command line."""
from . import main

main()
