"""medlake: an open, self-hostable research data platform for hospitals.

Importing the package is cheap on purpose: engines, drivers and heavy libraries load
lazily from the modules that need them.
"""

__version__ = "0.1.0"
