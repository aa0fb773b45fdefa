"""The collection on disk: SQLite metadata, embedding chunks, FAISS index files."""
