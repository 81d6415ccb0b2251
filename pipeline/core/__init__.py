"""The shared core: settings machinery, cache keys and atomic files, content digests, the resumable
item loop and the backends it runs on (serial, processes, dask)."""
