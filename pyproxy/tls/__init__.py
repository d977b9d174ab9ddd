"""TLS: the sslmode names, building SSL contexts from certificate files, and the contexts a
running proxy uses (replaced on reload, the old ones kept when a file is broken)."""
