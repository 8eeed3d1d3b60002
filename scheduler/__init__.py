"""The client API, the `atelier` CLI and the scheduling loop. Never imports TensorFlow."""
