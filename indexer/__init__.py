"""clipsearch: indexer layer."""
