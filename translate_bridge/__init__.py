"""Translation dubbing bridge (dubbed speech drives the lips). Not implemented yet: see issue 7."""
