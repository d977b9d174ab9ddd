"""Sans-IO SQL-session semantics: what statements do to a session, and the rewriting and
accounting that keep sessions apart on shared server connections."""
