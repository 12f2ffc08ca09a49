"""The vocabulary: recipes, plans, bundle manifests, signatures. Pure: no network, no writes."""
