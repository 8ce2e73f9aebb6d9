"""ragpg client tools (the engine itself lives in the database: see plpy/ragpg)."""
