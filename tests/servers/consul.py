"""Consul agents for the tests (fixtures: consul_server, consul_factory)."""
