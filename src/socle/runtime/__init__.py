"""Runtime drivers: where instances of apps actually run."""
