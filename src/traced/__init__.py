"""traced: a local trace recorder daemon for AI-agent skills."""

__version__ = "0.1.0"
