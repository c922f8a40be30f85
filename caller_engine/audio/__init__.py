"""Audio: G.711 μ-law (pure Python in `mulaw`, vectorised in `codec`), streaming resampling and
the per-call converters used by providers that do not take μ-law."""
