"""streamrec: a streaming, real-time personalization engine.

Kafka events in, ranked recommendations with truthful reasons out. The package has three
rooms, each a folder at the repository's root:

- :mod:`streamrec.stream`: the edges. Settings, message contracts, the client for other
  services, the Faust worker, the Redis adapter, the HTTP API and the command line.
- :mod:`streamrec.engine`: pure ranking logic. ``serving`` (model, candidates, ranking,
  user vectors), ``reasons`` (evidence, templates, the faithfulness guard) and
  ``offline`` (training, data sets, evaluation, baselines).
- :mod:`streamrec.index`: the candidate index (FAISS, exact, torch), its persistence and
  tuning.

The base install (``pip install streamrec``) carries the client and the contracts only;
``streamrec[worker]``, ``[api]``, ``[train]``, ``[eval]``, ``[lm]`` and ``[gpu]`` add the rest.
The public API for other services is re-exported here and in :mod:`streamrec.client`::

    from streamrec import EventProducer, recommendations
"""

from __future__ import annotations

from streamrec.client import *  # noqa: F403 - the public API is the client's
from streamrec.client import __all__ as __all__
