"""etcd servers for the tests (fixtures: etcd_server, etcd_factory)."""
