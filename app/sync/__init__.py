"""The sync layer: the applied state, its event stream, and the loop that feeds them.

* :mod:`app.sync.state`: what this instance has applied (projects, revision, peers) and
  waiting for a revision;
* :mod:`app.sync.stream`: the event stream (history, resume, subscribers, peers events);
* :mod:`app.sync.replay`: resumes from before the history, replayed from the source;
* :mod:`app.sync.frames`: the one definition of the event frames;
* :mod:`app.sync.source`: what the loop consumes (a store, or a follower);
* :mod:`app.sync.tokens`: the minted tokens' records this instance honours;
* :mod:`app.sync.loop`: the loop itself, and this instance's registration.
"""

from app.sync.loop import InstanceInfo, Syncer, utc_now_iso
from app.sync.source import ChangeSource, Registrar, TokenSource
from app.sync.state import NOT_SYNCED, ClusterState
from app.sync.tokens import AppliedTokens, TokensNotSynced

__all__ = [
    "NOT_SYNCED",
    "AppliedTokens",
    "ChangeSource",
    "ClusterState",
    "InstanceInfo",
    "Registrar",
    "Syncer",
    "TokenSource",
    "TokensNotSynced",
    "utc_now_iso",
]
