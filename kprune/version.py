"""The version of kprune (its own module, so the package root imports nothing heavy)."""

__version__ = "0.1.0"
