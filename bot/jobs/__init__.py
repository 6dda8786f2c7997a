"""The job system: fair scheduling, the durable queue and its journal, quota bookkeeping,
retention, and the NATS transport (``broker``). Never imports discord."""
