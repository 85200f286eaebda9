"""The embedded cloud: moto behind a layer that executes what moto only stores."""
