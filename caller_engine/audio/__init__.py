"""Audio helpers: G.711 μ-law coding and simple signal generation (pure Python)."""
