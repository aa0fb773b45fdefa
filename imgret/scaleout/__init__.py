"""Past one machine: the embedding loop and the index build on a Ray cluster (optional extra).

The driver keeps the collection's crash-safe commit path (imgret.jobs.sync); only the embedding
loop runs on Ray actors fed by the driver (`embed`), and IVF index shards are filled in Ray tasks
(`index_shards`). `cluster` connects to Ray. Ray is imported on use, never at import time.
"""
