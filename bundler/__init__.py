"""Online side: fetch packs through the executor and write one signed archive."""
