"""Feature store access (PostgreSQL locally, RisingWave in production): table definitions and upserts."""
