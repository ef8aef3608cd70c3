"""Support layer: configuration, I/O, provenance, archives, logging, the command line."""
