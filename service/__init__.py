"""The goldtrail HTTP service: settings, auth, database wiring, use cases, the app and its CLI."""
