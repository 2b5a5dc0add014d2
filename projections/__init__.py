"""The fold of gold-label events into state, and the read model the API serves from."""
