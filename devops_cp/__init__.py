"""devops-cp data: download, bundle, verify and sideload large data packs."""

__version__ = "0.1.0"
