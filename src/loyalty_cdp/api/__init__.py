"""The HTTP interface: Segment-compatible ingest, member reads, operations. Thin over the services."""
