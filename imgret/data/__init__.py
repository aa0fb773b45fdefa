"""Images in: decoding files, sources (folders, built-in sets, benchmark splits), one loader."""
