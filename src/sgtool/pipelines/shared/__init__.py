"""What several workflows share: the batch runner (inputs, names, shards, failures, manifests), images, rendering,
landmarks-transform tables, temporal smoothing, memory estimates and video files."""
