"""gonio.core: the science (models, file formats, algorithms, numba kernels).

core imports neither gonio.store nor gonio.shell, never prints and never
touches the database: functions take models and tables and return new ones
plus result objects.
"""
