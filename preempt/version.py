"""The package version, in a leaf module every layer may import (pyproject.toml holds the same)."""
__version__ = "0.1.0"
