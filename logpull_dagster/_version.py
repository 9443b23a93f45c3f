"""The version of logpull-dagster, in one place: ``logpull_dagster.__version__``, ``logpull --version`` and
setup.py (which reads this file as text, without importing the package) all take it from here."""

__version__ = "0.1.0"
