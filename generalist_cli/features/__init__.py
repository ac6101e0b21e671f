"""Features the model reads: Whisper log-mel spectrograms and the tokenizer."""
