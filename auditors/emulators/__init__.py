"""Local HTTPS emulators that speak Azure's wire protocols, for tests and offline demos."""
