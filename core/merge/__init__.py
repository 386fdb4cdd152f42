"""Merging scaled data into merged.mtz with French-Wilson amplitudes (dials.merge).

The grouping of symmetry equivalents and the merging statistics live in
:mod:`gonio.core.merging`; this package adds the selection of scaled data,
French & Wilson (1978) amplitudes, the Wilson B and the merged MTZ.
"""
