"""The Redis feature store and the event contract it consumes."""
