"""Answering queries: one Searcher (index, exact, cluster), re-ranking, results, duplicates."""
