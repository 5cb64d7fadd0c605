"""Brein's core assembled from a config and a store: the Brain that decides (brain.core) and the
worker that joins, learns and applies retention (brain.worker). No gRPC here: the server, the CLI
and the tests build on this."""
