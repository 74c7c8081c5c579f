"""clipsearch: service layer."""
