"""The cluster's Redis side: its connections, key names, scripts and the nodes' bookkeeping.

Imported only when ``redis_url`` is set: the single-node path never loads it.
"""
