"""Engines: what each backup strategy means for one kind of database server."""
