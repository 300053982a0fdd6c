"""The io_uring ring: the C mechanics (``ring.c``), their cffi build, and the sans-I/O engine."""
