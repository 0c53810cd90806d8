"""Generators of committed files: the node docs, the workflows kept as code, the workflow thumbnails."""
