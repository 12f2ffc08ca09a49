"""A site's mirror between the stick and its hosts: `mirror` publishes a verified bundle into an
OCI registry or an OCI image layout; `install --from` and `check-updates --from` read it back,
trusting only the signed bundle manifest each artifact carries. Layered above sideload/."""
