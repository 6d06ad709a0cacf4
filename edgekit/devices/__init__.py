"""Device profiles (TOML), what this machine can run, and remote devices over SSH."""
