"""Config stores: the embedded local file, etcd and Consul, behind one protocol (base.py)."""
