"""Test scaffolding shared by tests/, tools/ and bench/; never imported by the product.

Imported as the top-level package ``support``, with tests/ on sys.path:

* pytest: ``pythonpath = ["tests"]`` in pyproject.toml;
* tools/ and bench/: one ``sys.path.insert(0, <repo>/tests)`` line before the import
  (bench starts the server with ``PYTHONPATH=<repo>/tests python -m support.localserver``).

Modules:

* ``support.localserver``: an HTTP/1.1 server on 127.0.0.1 with per-path fault injection.
* ``support.webserver``: ``ServerThread``, the control panel's uvicorn in a background thread.
* ``support.waiting``: ``wait_for``, polling a condition (an event), never a bare sleep.
* ``support.tarballs``: tar.gz builders (members of every type, a folder of files, Trivy's db.tar.gz).
"""
