"""The files ttm-distill writes for others to read, each defined once: the run summary, the per-epoch metrics record and
the sweep manifest (fields, version, writing, reading, checking)."""
