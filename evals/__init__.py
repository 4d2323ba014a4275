"""Memory-quality evaluation: synthetic and LoCoMo/QASPER data in one schema, and the LoCoMo scorer."""
