"""LMDB persistence: store, snapshots, journal, group commit, activated entities."""
