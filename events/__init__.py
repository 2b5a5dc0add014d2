"""The append-only event log of gold labels: event types, the hash chain and the store."""
