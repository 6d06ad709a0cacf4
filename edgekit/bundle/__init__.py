"""The artifact bundle that ships to a device: manifest with hashes, and shipping."""
