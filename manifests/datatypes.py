"""Where each data type lives by default: the seed's DATA_DIRS, plus types added with
the consuming tool's own convention. Written as the seed writes them; the store maps
`~/.cache` and `~/.local/share` onto XDG_CACHE_HOME and XDG_DATA_HOME on the host.
"""

from __future__ import annotations

DEFAULT_DATA_DIRS: dict[str, str] = {
    "vulnerability_db": "~/.cache/trivy",
    "language_model": "~/.cache/spacy",
    "ml_model": "~/.cache/whisper",
    # Docker keeps images in /var/lib/docker itself; we keep the saved image tarballs
    # that `docker load` reads here.
    "container_image": "~/.cache/devops-cp/images",
    "geoip": "~/.local/share/geoip",
    "fonts": "~/.local/share/fonts",
    "grype_db": "~/.cache/grype/db",  # GRYPE_DB_CACHE_DIR's default
    "nltk_data": "~/nltk_data",  # first directory nltk searches after $NLTK_DATA
    "offline_docs": "~/.local/share/devops-cp/docs",
    "sample": "~/.local/share/devops-cp/samples",  # the built-in demo packs
}


def default_dir(data_type: str) -> str:
    return DEFAULT_DATA_DIRS.get(data_type, f"~/.local/share/devops-cp/{data_type}")
