"""Event-loop glue: how the sans-I/O engine is driven from a loop."""
