"""Consensus: the fan-out service (:mod:`.service`) and the aggregation methods (:mod:`.aggregation`)."""
