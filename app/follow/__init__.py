"""A follower: this instance mirrors another instance's event stream, read-only.

* :mod:`app.follow.sse`: the Server-Sent Events parser;
* :mod:`app.follow.state`: the pure state machine (events in, listings and batches out);
* :mod:`app.follow.upstream`: one upstream's stream over HTTP, and the start-up check;
* :mod:`app.follow.follower`: the connection loop, and the change source the sync loop
  consumes.
"""

from app.follow.follower import Follower, TokenSource

__all__ = ["Follower", "TokenSource"]
