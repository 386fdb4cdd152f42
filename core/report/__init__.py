"""Pictures of the data and models: report sections (plotly figures), image PNGs, lattices.

Everything here works from models and tables (no session, no store): the shell
gathers what a session holds and calls these functions. Figures are plain
plotly figure dicts (``{"data": [...], "layout": {...}}``) so that building
them needs only numpy; :mod:`.html` turns sections of them into one
self-contained page with plotly.js embedded.
"""
