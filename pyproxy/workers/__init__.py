"""Worker processes: a supervisor, N workers accepting on one address, one budget per pool."""
