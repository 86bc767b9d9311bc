"""ggq.convert: Hugging Face checkpoint -> GGUF in one step."""
