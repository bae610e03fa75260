"""API fakes of external services (Consul, Nomad), test code only."""
