"""Data: decoding, log-mel front end, manifests, shards and loaders."""
