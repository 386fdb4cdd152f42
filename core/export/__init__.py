"""Files for other programs (dials.export): unmerged MTZ, XDS_ASCII, SHELX, mmCIF, rlp JSON.

:func:`gonio.core.export.files.export_files` builds the files of one format from
experiments and a reflection table; :mod:`.prepare` applies dials.export's
filter and batch numbering shared by all formats.
"""
