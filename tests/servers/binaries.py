"""Find the etcd and Consul binaries: PATH first, then scripts/install-stores.sh's .stores/.

A missing binary fails the test loudly: the test command installs them, so absence is a
broken installation, never a reason to skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.servers.process import ROOT

_FALLBACKS = {
    "etcd": [Path("/usr/bin/etcd")],
    "etcdctl": [Path("/usr/bin/etcdctl")],
    "consul": [ROOT / ".stores/consul/usr/bin/consul"],
}


def binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in _FALLBACKS.get(name, []):
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(
        f"{name} is not installed: run scripts/install-stores.sh (the test command does)"
    )
