"""The admin console: PgBouncer's SHOW/PAUSE/RESUME/... commands on the pseudo-database
``pgbouncer`` (or ``pyproxy``) of the client listener, over the simple query protocol."""
