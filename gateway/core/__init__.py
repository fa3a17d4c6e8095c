"""Transaction, verdict, policy protocol, pipeline and registry: pure, no I/O."""
