"""The ingest webhook: alarms in, Incidents out."""
