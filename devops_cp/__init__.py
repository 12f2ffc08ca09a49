"""devops-cp data: download, bundle, verify and sideload large data packs."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The version is read only when asked for: reading the distribution's metadata costs start-up time.
    if name == "__version__":
        from manifests.version import VERSION

        return VERSION
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
