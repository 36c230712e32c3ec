"""Per-op latency measurement and cost models (issue 5: ARM backend). Empty until then."""
