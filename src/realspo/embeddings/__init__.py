"""Stage 2: response embeddings for REAL (causal LM, sentence-transformers, files, resumable progress)."""
