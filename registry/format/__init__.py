"""The bytes kreg writes and the rules for reading them, no policy: see ``schema/FORMAT.md``.

``container`` writes kreg's HDF5 files and ``guard`` is the one reader of files kreg did not
just write; ``content`` (layouts, the content hash), ``names`` and ``limits`` are the rules both
obey; ``spec/`` is the record schema, ``rows`` the listing rows, ``index`` and ``index_v1`` the
registry's index, ``pack`` and ``signing`` the packs teams send each other.
"""
