"""Air-gapped side: verify a bundle, then install it through the executor."""
