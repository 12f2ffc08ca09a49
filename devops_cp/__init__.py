"""devops-cp data: download, bundle, verify and sideload large data packs."""

from manifests.version import VERSION as __version__

__all__ = ["__version__"]
