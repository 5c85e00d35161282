"""zaqar-otel."""
