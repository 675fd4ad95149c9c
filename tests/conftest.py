pytest_plugins = ["tests.servers.etcd", "tests.servers.consul"]
